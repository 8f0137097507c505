import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { pathToFileURL } from 'node:url'
import { describe, it } from 'node:test'
import { pipeline } from 'node:stream/promises'
import { Writable } from 'node:stream'
import * as api from '../lib/index.js'
import { Chunker, composeStages, createSandbox, WasmExecutor, wasmTransform, type WasmSandboxError } from '../lib/index.js'
import { example, readExample, repoRoot, upperRef, wcRef } from './helpers/reference.js'
import { collector, randomBytes, run, sourceOf } from './helpers/streams.js'

describe('wasmTransform accepts every module form', () => {
  const input = Buffer.from('Hello, Wasm!\n')
  it('a file path', async () => {
    assert.equal((await run(wasmTransform(example('upper.wasm')), input)).toString(), 'HELLO, WASM!\n')
  })
  it('a file URL', async () => {
    const url = pathToFileURL(example('upper.wasm'))
    assert.equal((await run(wasmTransform(url), input)).toString(), 'HELLO, WASM!\n')
  })
  it('a Buffer and a Uint8Array', async () => {
    const bytes = readExample('upper.wasm')
    assert.equal((await run(wasmTransform(bytes), input)).toString(), 'HELLO, WASM!\n')
    assert.equal((await run(wasmTransform(new Uint8Array(bytes)), input)).toString(), 'HELLO, WASM!\n')
  })
  it('a WebAssembly.Module', async () => {
    const module = await WebAssembly.compile(readExample('upper.wasm'))
    assert.equal((await run(wasmTransform(module), input)).toString(), 'HELLO, WASM!\n')
  })
})

describe('options', () => {
  it('rejects unknown options, naming them', () => {
    assert.throws(() => wasmTransform(example('pass.wasm'), { bufferSzie: 10 } as never), (err: WasmSandboxError) => {
      assert.equal(err.code, 'ERR_WASM_INVALID_OPTION')
      assert.match(err.message, /bufferSzie/)
      return true
    })
    assert.throws(() => createSandbox({ flowControl: { hwm: 1 } } as never), { code: 'ERR_WASM_INVALID_OPTION' })
  })
  it('rejects bad values', () => {
    for (const bad of [{ bufferSize: 0 }, { bufferSize: 1.5 }, { delimiter: '' }, { highWaterMark: -1 }, { maxRecordSize: 10, bufferSize: 100 }]) {
      assert.throws(() => wasmTransform(example('pass.wasm'), bad as never), { code: 'ERR_WASM_INVALID_OPTION' })
    }
  })
  it('puts a BackpressureGate in the chain only for a lossy strategy', () => {
    const names = (s: { stages: readonly object[] }) => s.stages.map((x) => x.constructor.name)
    assert.deepEqual(names(wasmTransform(example('pass.wasm'))), ['Chunker', 'WasmExecutor'])
    assert.deepEqual(names(wasmTransform(example('pass.wasm'), { backpressure: 'drop' })), ['Chunker', 'BackpressureGate', 'WasmExecutor'])
    assert.throws(() => wasmTransform(example('pass.wasm'), { backpressure: 'shed' as never }), { code: 'ERR_WASM_INVALID_OPTION' })
  })

  it("backpressure 'drop' on the composed stream: whole records, output + dropped = input, drops reported", async () => {
    const stream = wasmTransform(example('pass.wasm'), {
      isolation: 'inline',
      bufferSize: 1024,
      delimiter: '\n',
      backpressure: 'drop',
      flowControl: { highWaterMark: 4096 },
    })
    let dropEvents = 0
    let dropEventBytes = 0
    stream.on('drop', (d: { offset: number; length: number }) => {
      dropEvents++
      dropEventBytes += d.length
    })
    const input = Buffer.from('0123456789abcdef\n'.repeat(64 * 1024))
    const sink = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        out.push(chunk)
        setTimeout(cb, 1)
      },
    })
    const out: Buffer[] = []
    await pipeline(sourceOf(input, [65536]), stream, sink)
    const output = Buffer.concat(out)
    const metrics = stream.metrics()
    assert.ok(metrics.bytesDropped > 0, 'a slow sink made it drop')
    assert.equal(output.length + metrics.bytesDropped, input.length)
    assert.equal(dropEventBytes, metrics.bytesDropped)
    assert.equal(dropEvents, metrics.chunksDropped)
    assert.equal(output.length % 17, 0, 'only whole records')
    assert.ok(/^(0123456789abcdef\n)*$/.test(output.toString()))
  })
  it('does not modify the options object', () => {
    const options = Object.freeze({ bufferSize: 1024, delimiter: '\n', flowControl: Object.freeze({ sampleRate: 3 }) })
    wasmTransform(example('pass.wasm'), options).destroy()
  })
})

describe('createSandbox', () => {
  it('processor.stream() gives a fresh duplex each time, each with its own guest state', async () => {
    const processor = createSandbox({ bufferSize: 1024 }).createStreamProcessor(example('wc.wasm'))
    const a = Buffer.from('one two\nthree\n')
    const b = Buffer.from('x\n')
    const [outA, outB] = await Promise.all([run(processor.stream(), a), run(processor.stream(), b)])
    assert.deepEqual(outA, wcRef(a))
    assert.deepEqual(outB, wcRef(b))
  })

  it('processor.processStream() turns an async iterable into output chunks', async () => {
    const processor = createSandbox().createStreamProcessor(example('upper.wasm'))
    async function* input() {
      yield Buffer.from('abc')
      yield 'def'
    }
    const out: Buffer[] = []
    for await (const chunk of processor.processStream(input())) out.push(chunk)
    assert.equal(Buffer.concat(out).toString(), 'ABCDEF')
  })

  it('processor.processStream() rethrows a guest error to the consumer', async () => {
    const processor = createSandbox().createStreamProcessor(example('../spec/fixtures/unreachable.wasm'))
    await assert.rejects(async () => {
      for await (const _ of processor.processStream([Buffer.from('x')])) void _
    }, { code: 'ERR_WASM_TRAP' })
  })

  it('call() runs one input through process_chunk and flush', async () => {
    const sandbox = createSandbox()
    const input = randomBytes(200_000, 4)
    assert.deepEqual(await sandbox.call(example('upper.wasm'), input), upperRef(input))
    assert.deepEqual(await sandbox.call(example('wc.wasm'), 'a b\nc'), wcRef(Buffer.from('a b\nc')))
    assert.deepEqual(await sandbox.call(example('wc.wasm'), ''), Buffer.from('0 0 0\n'))
  })
})

describe('stage classes, composed by hand', () => {
  it('Chunker and WasmExecutor work in a plain pipeline()', async () => {
    const input = randomBytes(100_000, 8)
    const sink = collector()
    await pipeline(sourceOf(input, [999]), new Chunker({ bufferSize: 4096 }), new WasmExecutor(example('upper.wasm'), { bufferSize: 4096 }), sink)
    assert.deepEqual(sink.result(), upperRef(input))
  })

  it('composeStages bundles any stages into one duplex', async () => {
    const input = randomBytes(10_000, 2)
    const bundle = composeStages([new Chunker({ bufferSize: 512 }) as never, new WasmExecutor(example('pass.wasm'), { bufferSize: 512 }) as never], 512)
    assert.deepEqual(await run(bundle, input), input)
  })
})

describe('package', () => {
  it('exports the public API from the package entry', async () => {
    const pkg = JSON.parse(await readFile(`${repoRoot}/package.json`, 'utf8'))
    assert.equal(pkg.exports['.'].import, './dist/index.js')
    assert.equal(pkg.exports['.'].types, './dist/index.d.ts')
    const entry = await import(pathToFileURL(`${repoRoot}/dist/index.js`).href)
    for (const name of ['wasmTransform', 'createSandbox', 'Chunker', 'BackpressureGate', 'WasmExecutor', 'CheckpointTap', 'WasmSandboxError']) {
      assert.equal(typeof entry[name], 'function', `${name} is exported from dist/index.js`)
      assert.equal(typeof (api as Record<string, unknown>)[name], 'function')
    }
  })
})

describe('metrics()', () => {
  for (const isolation of ['inline', 'worker'] as const) {
    it(`counts bytes, chunks, guest time and backpressure waits (${isolation})`, async () => {
      const stream = wasmTransform(example('../spec/fixtures/emit-many.wasm'), { isolation, bufferSize: 256, highWaterMark: 1024 })
      const input = randomBytes(256 * 8, 3)
      const sink = new Writable({
        highWaterMark: 1024,
        write(_chunk, _enc, cb) {
          setImmediate(cb)
        },
      })
      await pipeline(sourceOf(input, [256]), stream, sink)
      const m = stream.metrics()
      assert.equal(m.bytesIn, input.length)
      assert.equal(m.bytesOut, 1000 * input.length)
      assert.equal(m.chunks, 8)
      assert.ok(m.guestTimeMs > 0, 'time in the guest is measured')
      assert.ok(m.backpressureWaits > 0, 'a slow consumer made the guest output wait')
      assert.equal(m.chunksDropped + m.bytesDropped + m.chunksSkipped + m.checkpointsSaved, 0)
      assert.equal(m.lastCheckpoint, undefined)
    })

    it(`counts no backpressure wait when the consumer never waits, even for outputs of a whole highWaterMark (${isolation})`, async () => {
      const stream = wasmTransform(example('pass.wasm'), { isolation, bufferSize: 1024, highWaterMark: 1024 })
      const input = randomBytes(1024 * 64, 4)
      await pipeline(sourceOf(input, [1024]), stream, new Writable({ write: (_c, _e, cb) => cb() }))
      const m = stream.metrics()
      assert.equal(m.bytesOut, input.length)
      assert.equal(m.backpressureWaits, 0)
    })
  }

  it('bytesProcessed trails bytesIn by the chunks in flight, at most maxInFlight + 2 of them, and catches up at the end', async () => {
    // slow.wasm busy-loops (first byte × 10^7) iterations per chunk: byte 1 makes each chunk take milliseconds.
    const stream = wasmTransform(example('../spec/fixtures/slow.wasm'), { bufferSize: 1024, flowControl: { maxInFlight: 4 } })
    const input = Buffer.alloc(1024 * 24, 1)
    const seen: Array<[number, number]> = []
    const sink = new Writable({
      write(_chunk, _enc, cb) {
        const m = stream.metrics()
        seen.push([m.bytesIn, m.bytesProcessed])
        cb()
      },
    })
    await pipeline(sourceOf(input, [4096]), stream, sink)
    for (const [bytesIn, processed] of seen) {
      assert.ok(processed <= bytesIn, `processed ${processed} of ${bytesIn}`)
      // Four queued in the worker's input ring, the one its guest is working on, and the one
      // handed to the runner and waiting for ring room (the executor takes no more until it fits).
      assert.ok(bytesIn - processed <= 6 * 1024, `${bytesIn - processed} bytes in flight, more than 4 + 2 chunks`)
    }
    assert.ok(seen.some(([bytesIn, processed]) => processed < bytesIn), `chunks were in flight while output came: ${JSON.stringify(seen)}`)
    const m = stream.metrics()
    assert.equal(m.bytesProcessed, input.length)
    assert.equal(m.bytesIn, input.length)
  })
})
