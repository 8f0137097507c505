import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Readable, Writable, type Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { wasmTransform, type SandboxStream, type WasmSandboxError, type WasmSandboxErrorCode } from '../lib/index.js'
import { example, fixture, readFixture } from './helpers/reference.js'
import { collector, randomBytes, sourceOf } from './helpers/streams.js'

function expectCode(code: WasmSandboxErrorCode, check?: (err: WasmSandboxError) => void) {
  return (err: WasmSandboxError): boolean => {
    assert.equal(err.name, 'WasmSandboxError', `expected a WasmSandboxError, got ${err.stack}`)
    assert.equal(err.code, code, err.message)
    check?.(err)
    return true
  }
}

async function through(module: Parameters<typeof wasmTransform>[0], input: Buffer = Buffer.from('hello'), options = {}) {
  const sink = collector()
  await pipeline(sourceOf(input), wasmTransform(module, options), sink)
  return sink.result()
}

function assertAllDestroyed(stream: SandboxStream): void {
  for (const stage of stream.stages) assert.ok((stage as Duplex).destroyed, `${stage.constructor.name} was destroyed`)
}

describe('bad modules are refused at load with a clear error', () => {
  it('a path that does not exist', async () => {
    await assert.rejects(through('/no/such/guest.wasm'), expectCode('ERR_WASM_MODULE_NOT_FOUND', (e) => assert.match(e.message, /no\/such\/guest/)))
  })
  it('bytes that are not wasm', async () => {
    await assert.rejects(through(fixture('not-wasm.txt')), expectCode('ERR_WASM_INVALID_MODULE'))
    await assert.rejects(through(readFixture('random.bin')), expectCode('ERR_WASM_INVALID_MODULE'))
  })
  it('a truncated module', async () => {
    await assert.rejects(through(fixture('truncated.wasm')), expectCode('ERR_WASM_INVALID_MODULE'))
  })
  it('a module missing required exports, listing which', async () => {
    await assert.rejects(
      through(fixture('missing-exports.wasm')),
      expectCode('ERR_WASM_MISSING_EXPORT', (e) => assert.match(e.message, /alloc, process_chunk/)),
    )
  })
  it('an export with the wrong signature', async () => {
    await assert.rejects(
      through(fixture('wrong-signature.wasm')),
      expectCode('ERR_WASM_BAD_EXPORT', (e) => assert.match(e.message, /process_chunk.*\(i32\) -> \(i32\)/)),
    )
  })
  it('an export of the wrong kind', async () => {
    await assert.rejects(through(fixture('export-not-function.wasm')), expectCode('ERR_WASM_BAD_EXPORT', (e) => assert.match(e.message, /alloc/)))
  })
  it('an unknown import, naming it', async () => {
    await assert.rejects(through(fixture('bad-import.wasm')), expectCode('ERR_WASM_UNKNOWN_IMPORT', (e) => assert.match(e.message, /env\.clock_time_get/)))
  })
})

describe('guest failures become typed errors with the input offset', () => {
  it('a trap names the module, the export and the offset', async () => {
    await assert.rejects(
      through(fixture('unreachable.wasm')),
      expectCode('ERR_WASM_TRAP', (e) => {
        assert.equal(e.exportName, 'process_chunk')
        assert.equal(e.offset, 0)
        assert.match(e.message, /unreachable\.wasm: process_chunk\(\) at input offset 0: unreachable/)
      }),
    )
  })
  it('a stack overflow is a trap, not a host crash', async () => {
    await assert.rejects(through(fixture('stack-overflow.wasm')), expectCode('ERR_WASM_TRAP'))
  })
  it('a non-zero status carries the sandbox.fail message and the failing chunk offset', async () => {
    const input = Buffer.concat([Buffer.alloc(3000, 'a'), Buffer.from('!'), Buffer.alloc(100, 'b')])
    await assert.rejects(
      through(fixture('fail-on-bang.wasm'), input, { bufferSize: 1000 }),
      expectCode('ERR_WASM_GUEST_ERROR', (e) => {
        assert.equal(e.status, 9)
        assert.equal(e.offset, 3000, 'offset of the chunk that failed')
        assert.match(e.message, /status 9.*found a bang/)
      }),
    )
  })
  it('a non-zero status without a message says so', async () => {
    await assert.rejects(through(fixture('fail-no-message.wasm')), expectCode('ERR_WASM_GUEST_ERROR', (e) => assert.match(e.message, /no message/)))
  })
  it('a failing init is reported against init', async () => {
    await assert.rejects(through(fixture('init-fails.wasm')), expectCode('ERR_WASM_GUEST_ERROR', (e) => {
      assert.equal(e.exportName, 'init')
      assert.match(e.message, /init refused/)
    }))
  })
  for (const name of ['emit-oob', 'emit-negative', 'emit-wrap', 'alloc-oob']) {
    it(`${name}: an out-of-bounds pointer or length is refused`, async () => {
      await assert.rejects(through(fixture(`${name}.wasm`)), expectCode('ERR_WASM_OUT_OF_BOUNDS'))
    })
  }
  it('a guest with an imported env.memory works', async () => {
    const input = randomBytes(100_000)
    assert.deepEqual(await through(fixture('imported-memory.wasm'), input, { bufferSize: 8192 }), input)
  })
})

describe('errors anywhere destroy every stage and reach the pipeline callback', () => {
  it('from the guest', async () => {
    const stream = wasmTransform(fixture('fail-on-bang.wasm'), { bufferSize: 16 })
    const input = Buffer.from('a'.repeat(100) + '!')
    await assert.rejects(pipeline(sourceOf(input, [10]), stream, collector()), expectCode('ERR_WASM_GUEST_ERROR'))
    assertAllDestroyed(stream)
  })

  it('from the source', async () => {
    const stream = wasmTransform(example('pass.wasm'), { bufferSize: 16 })
    let n = 0
    const source = new Readable({
      read() {
        if (++n === 5) this.destroy(new Error('source broke'))
        else this.push(Buffer.alloc(10, n))
      },
    })
    await assert.rejects(pipeline(source, stream, collector()), /source broke/)
    assertAllDestroyed(stream)
  })

  it('from the sink', async () => {
    const stream = wasmTransform(example('pass.wasm'), { bufferSize: 16 })
    let n = 0
    const sink = new Writable({
      write(_chunk, _enc, cb) {
        cb(++n === 3 ? new Error('sink broke') : null)
      },
    })
    await assert.rejects(pipeline(sourceOf(randomBytes(1000), [16]), stream, sink), /sink broke/)
    assertAllDestroyed(stream)
  })

  it('the error event fires once and close after it', async () => {
    const stream = wasmTransform(fixture('unreachable.wasm'))
    const events: string[] = []
    stream.on('error', (e: WasmSandboxError) => events.push(`error:${e.code}`))
    stream.on('close', () => events.push('close'))
    stream.on('end', () => events.push('end'))
    stream.resume()
    stream.end(Buffer.from('x'))
    await new Promise((resolve) => stream.once('close', resolve))
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual(events, ['error:ERR_WASM_TRAP', 'close'])
  })
})
