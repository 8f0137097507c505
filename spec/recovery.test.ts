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
import { MSG_SESSION } from '../lib/runners/protocol.js'
import { WasmExecutor, WorkerPool, wasmTransform, type Isolation, type SandboxOptions } from '../lib/index.js'
import { example, fixture, upperRef } from './helpers/reference.js'
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

/** A pool whose first `deaths` workers are terminated as soon as they are sent a guest to start. */
function poolKillingStarts(deaths: number): { workers: WorkerPool; killed: () => number } {
  const workers = new WorkerPool()
  const acquire = workers.acquire.bind(workers)
  let killed = 0
  workers.acquire = (callback, wait) =>
    acquire((err, worker) => {
      if (worker && killed < deaths) {
        killed++
        const post = worker.postMessage.bind(worker)
        worker.postMessage = (message: unknown, transfer?: never) => {
          post(message, transfer)
          if ((message as { kind?: number }).kind !== MSG_SESSION) return
          worker.postMessage = post
          void worker.terminate()
        }
      }
      callback(err, worker)
    }, wait)
  return { workers, killed: () => killed }
}

describe('recovery from a worker that dies while the guest starts', () => {
  const input = Buffer.from('a thread that dies while the guest starts is replaced\n'.repeat(2000))

  for (const recoveryStrategy of [{ retry: 1 }, 'skip'] as const) {
    it(`${JSON.stringify(recoveryStrategy)}: the guest starts on a new thread, and every byte comes out`, async () => {
      const { workers, killed } = poolKillingStarts(1)
      try {
        const executor = new WasmExecutor(example('upper.wasm'), { isolation: 'worker', bufferSize: 4096, recoveryStrategy, workers })
        const sink = collector()
        await pipeline(sourceOf(input, [1000]), executor, sink)
        assert.equal(killed(), 1)
        assert.deepEqual(sink.result(), upperRef(input))
      } finally {
        workers.close()
      }
    })
  }

  it("'fail' fails at once, and a retry budget is spent by deaths at start too", async () => {
    for (const [recoveryStrategy, deaths] of [['fail', 1], [{ retry: 1 }, 2], [{ retry: 2 }, 3]] as const) {
      const { workers, killed } = poolKillingStarts(deaths)
      try {
        const executor = new WasmExecutor(example('upper.wasm'), { isolation: 'worker', bufferSize: 4096, recoveryStrategy, workers })
        await assert.rejects(pipeline(sourceOf(input, [1000]), executor, collector()), { code: 'ERR_WASM_WORKER_DIED' }, JSON.stringify(recoveryStrategy))
        assert.equal(killed(), deaths, JSON.stringify(recoveryStrategy))
      } finally {
        workers.close()
      }
    }
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
