/**
 * Recovery ('skip', { retry }) as a runner around a runner: a stateful guest comes back at the
 * state it had before the failed chunk, the hold of a chunk's output is bounded and paused with
 * the consumer, and what cannot be bounded is refused.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { REPLAY_LOG_JOBS } from '../lib/runners/recovering.js'
import { WasmExecutor, wasmTransform, type Isolation, type SandboxOptions } from '../lib/index.js'
import { example, fixture } from './helpers/reference.js'
import { collector, delay, run, sourceOf } from './helpers/streams.js'

const isolations: Isolation[] = ['inline', 'worker']

/** 4-byte chunks, a '!' in the ones listed: what total-fail-on-bang.wasm must print. */
function bangInput(chunks: number, bangs: readonly number[]): { input: Buffer; expected: Buffer; kept: number } {
  const parts: Buffer[] = []
  const out: Buffer[] = []
  for (let i = 0; i < chunks; i++) {
    const letter = String.fromCharCode(97 + (i % 26))
    const chunk = Buffer.from(bangs.includes(i) ? `${letter}!${letter}${letter}` : letter.repeat(4))
    parts.push(chunk)
    if (!bangs.includes(i)) out.push(chunk)
  }
  const kept = out.reduce((n, c) => n + c.length, 0)
  const total = Buffer.alloc(4)
  total.writeUInt32LE(kept)
  return { input: Buffer.concat(parts), expected: Buffer.concat([...out, total]), kept }
}

function totalOf(output: Buffer): number {
  return output.readUInt32LE(output.length - 4)
}

for (const isolation of isolations) {
  describe(`recovery keeps a stateful guest's state (${isolation})`, () => {
    // More chunks than the replay log holds, so recovery also runs from a snapshot it took.
    const chunks = REPLAY_LOG_JOBS * 3 + 5
    const bangs = [2, REPLAY_LOG_JOBS + 3, REPLAY_LOG_JOBS * 2 + 7, chunks - 1]

    it("'skip' goes on from the state before the failed chunk", async () => {
      const { input, expected } = bangInput(chunks, bangs)
      const stream = wasmTransform(fixture('total-fail-on-bang.wasm'), { isolation, bufferSize: 4, recoveryStrategy: 'skip' })
      const skipped: number[] = []
      stream.on('chunk-error', (err: { offset: number }) => skipped.push(err.offset))
      const out = await run(stream, input, [4])
      assert.deepEqual(out, expected, 'every kept chunk passed once, and the guest counted all of them')
      assert.deepEqual(skipped, bangs.map((i) => i * 4))
      assert.equal(stream.metrics().chunksSkipped, bangs.length)
    })

    it("'skip' with stateless: true restarts from init (the count starts again)", async () => {
      const { input, kept } = bangInput(chunks, [2, 20])
      const options: SandboxOptions = { isolation, bufferSize: 4, recoveryStrategy: 'skip', stateless: true }
      const out = await run(wasmTransform(fixture('total-fail-on-bang.wasm'), options), input, [4])
      assert.equal(totalOf(out), (chunks - 21) * 4, 'counted only the chunks after the last restart')
      assert.ok(totalOf(out) < kept)
    })

    it('{ retry } that runs out fails the stream once, with what succeeded delivered', async () => {
      const { input } = bangInput(10, [5])
      const stream = wasmTransform(fixture('total-fail-on-bang.wasm'), { isolation, bufferSize: 4, recoveryStrategy: { retry: 2 } })
      const events = { error: 0, end: 0, close: 0 }
      stream.on('error', () => events.error++)
      stream.on('end', () => events.end++)
      stream.on('close', () => events.close++)
      const sink = collector()
      await assert.rejects(pipeline(sourceOf(input, [4]), stream, sink), { code: 'ERR_WASM_GUEST_ERROR', offset: 20 })
      await delay(20)
      assert.deepEqual(events, { error: 1, end: 0, close: 1 })
      assert.equal(sink.result().toString(), 'aaaabbbbccccddddeeee')
    })
  })
}

describe('recovery after a worker dies', () => {
  it('{ retry: 1 } replaces a worker killed between chunks at the state it had', async () => {
    const chunks = REPLAY_LOG_JOBS * 2 + 3
    const { input, expected } = bangInput(chunks, [])
    const stream = wasmTransform(fixture('total-fail-on-bang.wasm'), { isolation: 'worker', bufferSize: 4, recoveryStrategy: { retry: 1 } })
    type Killable = { worker?: { terminate(): Promise<number> }; inner?: Killable }
    const workerOf = (r: Killable | undefined): Killable['worker'] => r && (r.worker ?? workerOf(r.inner))
    const executor = stream.stages[1] as unknown as { runner: Killable }
    const sink = collector()
    async function* source(): AsyncGenerator<Buffer> {
      for (let i = 0; i < chunks; i++) {
        if (i === REPLAY_LOG_JOBS + 5) {
          // Between chunks: once every chunk so far is done (the stages buffer far more than
          // these 4-byte chunks, so the source is not held back until then).
          while (sink.chunks.reduce((n, c) => n + c.length, 0) < i * 4) await delay(5)
          await workerOf(executor.runner)!.terminate()
          await delay(30)
        }
        yield input.subarray(i * 4, i * 4 + 4)
      }
    }
    await pipeline(Readable.from(source()), stream, sink)
    assert.deepEqual(sink.result(), expected)
  })
})

describe('the hold under recovery is bounded', () => {
  it('refuses maxOutputPerChunk: Infinity with skip or retry', () => {
    for (const recoveryStrategy of ['skip', { retry: 1 }] as const) {
      assert.throws(() => wasmTransform(example('pass.wasm'), { recoveryStrategy, limits: { maxOutputPerChunk: Infinity } }), {
        code: 'ERR_WASM_INVALID_OPTION',
        message: /maxOutputPerChunk cannot be Infinity/,
      })
    }
    assert.doesNotThrow(() => wasmTransform(example('pass.wasm'), { isolation: 'inline', limits: { maxOutputPerChunk: Infinity } }).destroy())
  })

  for (const isolation of isolations) {
    it(`a slow consumer pauses the guest: queued output stays within one chunk's output (${isolation})`, async () => {
      const bufferSize = 256
      const perChunk = 1000 * bufferSize
      const stream = wasmTransform(fixture('emit-many.wasm'), { isolation, bufferSize, recoveryStrategy: 'skip' })
      const executor = stream.stages[1] as unknown as WasmExecutor
      let maxQueued = 0
      const sink = new Writable({
        highWaterMark: bufferSize,
        write(_chunk, _enc, cb) {
          maxQueued = Math.max(maxQueued, executor.queuedBytes)
          setImmediate(cb)
        },
      })
      await pipeline(sourceOf(Buffer.alloc(bufferSize * 32, 7), [bufferSize]), stream, sink)
      assert.equal(stream.metrics().bytesOut, perChunk * 32)
      assert.ok(maxQueued <= perChunk + bufferSize, `queued at most one chunk's output, saw ${maxQueued}`)
    })
  }
})
