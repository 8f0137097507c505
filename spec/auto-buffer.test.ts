/**
 * `bufferSize: 'auto'`: the chunk size is chosen while the stream runs, and the output never
 * depends on the choice (a record is never cut, a stateful guest sees the same bytes).
 */
import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it } from 'node:test'
import { MemoryCheckpointStorage, wasmTransform, type SandboxOptions } from '../lib/index.js'
import { AUTO_BUFFER_SIZES } from '../lib/options.js'
import { example, fixture, grepRef, numbererRef } from './helpers/reference.js'
import { collector, randomLines } from './helpers/streams.js'

const KiB = 1024

/** `input` in pieces with a pause between, so the stream lasts long enough to be measured. */
function paced(input: Buffer, piece: number, pauseMs: number): Readable {
  return Readable.from(
    (async function* () {
      for (let at = 0; at < input.length; at += piece) {
        yield input.subarray(at, at + piece)
        await new Promise((resolve) => setTimeout(resolve, pauseMs))
      }
    })(),
  )
}

async function through(module: string, options: SandboxOptions, input: Buffer): Promise<{ out: Buffer; stream: ReturnType<typeof wasmTransform> }> {
  const stream = wasmTransform(module, options)
  const sink = collector()
  await pipeline(paced(input, 128 * KiB, 3), stream, sink)
  return { out: sink.result(), stream }
}

describe("bufferSize: 'auto'", () => {
  it('a stateful guest gives the same output as with a fixed size, and the choice is reported', async () => {
    const input = randomLines(16 * 1024 * KiB, 17)
    const { out, stream } = await through(example('numberer.wasm'), { bufferSize: 'auto' }, input)
    assert.deepEqual(out, numbererRef(input))
    const report = stream.metrics().chunking!
    assert.equal(report.auto, true)
    assert.ok((AUTO_BUFFER_SIZES as readonly number[]).includes(report.bufferSize), JSON.stringify(report))
    assert.ok(report.samples.length >= 1, `nothing was measured: ${JSON.stringify(report)}`)
    assert.deepEqual(report.samples.map((s) => s.bufferSize), AUTO_BUFFER_SIZES.slice(0, report.samples.length), 'sizes are tried in order')
  })

  it('with a delimiter no record is ever cut, whatever size it picks', async () => {
    const input = randomLines(8 * 1024 * KiB, 5)
    const { out } = await through(example('grep.wasm'), { bufferSize: 'auto', delimiter: '\n', isolation: 'inline' }, input)
    assert.deepEqual(out, grepRef(input))
  })

  it('a WASI program run per chunk keeps its chunk size, and says why', async () => {
    const input = Buffer.from('abc\n'.repeat(100))
    const { out, stream } = await through(fixture('wasi-cat.wasm'), { bufferSize: 'auto', wasi: { mode: 'record' } }, input)
    assert.deepEqual(out, input)
    assert.match(stream.metrics().chunking!.reason, /run per chunk/)
    assert.equal(stream.metrics().chunking!.bufferSize, AUTO_BUFFER_SIZES[0])
  })

  it("a checkpoint taken with 'auto' resumes with 'auto', and not with a fixed size", async () => {
    const input = randomLines(4 * 1024 * KiB, 8)
    const storage = new MemoryCheckpointStorage()
    const options: SandboxOptions = { bufferSize: 'auto', checkpoint: { storage, every: 512 * KiB } }
    const { out } = await through(example('numberer.wasm'), options, input)
    assert.deepEqual(out, numbererRef(input))
    const saved = await storage.loadLatest()
    assert.ok(saved, 'no checkpoint was taken')
    const rest = await through(example('numberer.wasm'), { bufferSize: 'auto', resumeFrom: saved! }, input.subarray(saved!.inputOffset))
    assert.deepEqual(Buffer.concat([out.subarray(0, saved!.outputOffset), rest.out]), numbererRef(input))
    assert.throws(() => wasmTransform(example('numberer.wasm'), { bufferSize: 16 * KiB, resumeFrom: saved! }), { code: 'ERR_WASM_CHECKPOINT_MISMATCH' })
  })

  it("only the string 'auto' is accepted", () => {
    for (const bad of ['Auto', 'auto ', '64k']) {
      assert.throws(() => wasmTransform(example('upper.wasm'), { bufferSize: bad as 'auto' }), { code: 'ERR_WASM_INVALID_OPTION' })
    }
  })
})
