/** The runner contract, checked on each runner directly. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  InlineRunner,
  WorkerPool,
  WorkerRunner,
  loadGuest,
  runnerChain,
  type GuestRunner,
  type Job,
  type RunnerFactory,
  type RunnerHooks,
  type WasmSandboxError,
} from '../lib/index.js'
import { example } from './helpers/reference.js'

const OPTIONS = { bufferSize: 1024, limits: { maxOutputPerChunk: undefined, maxOutput: Infinity }, timeout: 1000, maxInFlight: 2 }

function recorder(): RunnerHooks & { log: string[]; errors: WasmSandboxError[] } {
  const log: string[] = []
  const errors: WasmSandboxError[] = []
  return {
    log,
    errors,
    output: (job, chunk) => log.push(`output ${job.offset} ${chunk.toString()}`) > 0,
    done: (job) => void log.push(`done ${job.offset}`),
    failed: (job, err) => {
      log.push(`failed ${job?.offset}`)
      errors.push(err)
    },
  }
}

const process1 = (runner: GuestRunner, job: Job): Promise<void> => new Promise((resolve) => runner.process(job, () => resolve()))
const start = (runner: GuestRunner): Promise<void> =>
  new Promise((resolve, reject) => runner.start((err) => (err ? reject(err) : resolve())))

const factories: Record<string, RunnerFactory> = {
  inline: (g, h, o) => new InlineRunner(g, h, o),
  worker: (g, h, o) => new WorkerRunner(g, h, o),
  'chain (worker, retry, cuts, deadline)': runnerChain({
    isolation: 'worker',
    recovery: { retry: 1 },
    deadline: 10_000,
    snapshots: { every: 1, inputOffset: 0, outputOffset: 0 },
  }),
}

for (const [name, factory] of Object.entries(factories)) {
  describe(`runner: ${name}`, () => {
    it('reports each job with its own offset, output before done', async () => {
      const guest = await loadGuest(example('pass.wasm'))
      const hooks = recorder()
      const runner = factory(guest, { ...hooks, snapshot: () => {} }, OPTIONS)
      await start(runner)
      await process1(runner, { offset: 0, input: Buffer.from('ab') })
      await process1(runner, { offset: 2, input: Buffer.from('cd') })
      await process1(runner, { offset: 4, input: null })
      for (let i = 0; i < 100 && hooks.log.length < 5; i++) await new Promise((r) => setTimeout(r, 5))
      runner.destroy()
      assert.deepEqual(hooks.log, ['output 0 ab', 'done 0', 'output 2 cd', 'done 2', 'done 4'])
    })
  })
}

for (const name of ['inline', 'worker']) {
  describe(`runner without an instance: ${name}`, () => {
    it('fails a job sent before start, or after destroy, with ERR_WASM_NO_INSTANCE', async () => {
      const guest = await loadGuest(example('pass.wasm'))
      const hooks = recorder()
      const runner = factories[name]!(guest, hooks, OPTIONS)
      await process1(runner, { offset: 7, input: Buffer.from('x') })
      await start(runner)
      runner.destroy()
      await process1(runner, { offset: 8, input: null })
      assert.deepEqual(hooks.log, ['failed 7', 'failed 8'])
      assert.deepEqual(
        hooks.errors.map((e) => [e.code, e.offset, e.exportName]),
        [
          ['ERR_WASM_NO_INSTANCE', 7, 'process_chunk'],
          ['ERR_WASM_NO_INSTANCE', 8, 'flush'],
        ],
      )
    })

    it('fails a snapshot with no instance instead of answering with nothing', async () => {
      const guest = await loadGuest(example('pass.wasm'))
      const runner = factories[name]!(guest, recorder(), OPTIONS)
      const err = await new Promise<Error | null>((resolve) => runner.snapshot((e) => resolve(e)))
      assert.ok(err, 'a snapshot without an instance is an error')
    })
  })
}

describe('a deadline during start-up', () => {
  it('fails the stream with the deadline, once, instead of hanging on a start that never calls back', async () => {
    const { wasmTransform } = await import('../lib/index.js')
    const { fixture } = await import('./helpers/reference.js')
    const { run, delay } = await import('./helpers/streams.js')
    const stream = wasmTransform(fixture('loop-start.wasm'), { limits: { deadline: 200, timeout: 30_000 } })
    const events = { error: 0, close: 0 }
    stream.on('error', () => events.error++)
    stream.on('close', () => events.close++)
    const started = performance.now()
    await assert.rejects(run(stream, Buffer.from('x')), { code: 'ERR_WASM_TIMEOUT', exportName: 'start', message: /deadline of 200 ms/ })
    assert.ok(performance.now() - started < 5000)
    await delay(20)
    assert.deepEqual(events, { error: 1, close: 1 })
  })
})

describe('worker runner: waiting for a worker', () => {
  it('a start answered at once that starts over leaves the new wait cancellable by destroy', async () => {
    const guest = await loadGuest(example('pass.wasm'))
    const cancelled: number[] = []
    let asked = 0
    // A pool whose first answer comes at once (a thread that failed to spawn) and whose second
    // request waits.
    const workers = {
      acquire(callback: (err: Error | null) => void): () => void {
        const request = ++asked
        if (request === 1) {
          callback(new Error('spawn failed'))
          return () => cancelled.push(request)
        }
        return () => cancelled.push(request)
      },
      discard() {},
      release() {},
    }
    const runner = new WorkerRunner(guest, recorder(), { ...OPTIONS, workers: workers as never })
    const failures: string[] = []
    runner.start((err) => {
      failures.push((err as WasmSandboxError | null)?.code ?? 'none')
      // Recovery starting over at once, as a retry does.
      runner.restart(() => failures.push('second start answered'))
    })
    assert.deepEqual(failures, ['ERR_WASM_WORKER_DIED'])
    runner.destroy()
    assert.deepEqual(cancelled, [2], 'the wait of the second start was withdrawn, and only it')
  })

  it('close ends a session that ran no chunk without its flush, and its worker serves the next runner', async () => {
    // wc writes its counts in its flush: close must not call it, nor report a job.
    const guest = await loadGuest(example('wc.wasm'))
    const workers = new WorkerPool({ idleMs: 10_000 })
    try {
      const hooks = recorder()
      const first = new WorkerRunner(guest, hooks, { ...OPTIONS, workers })
      await start(first)
      await new Promise<void>((resolve, reject) => first.close!((err) => (err ? reject(err) : resolve())))
      assert.deepEqual(hooks.log, [], 'a close reported a job or output')
      assert.equal(workers.idleCount, 1, 'the worker did not go back to the pool')
      const second = new WorkerRunner(guest, recorder(), { ...OPTIONS, workers })
      await start(second)
      assert.equal(workers.size, 1, 'a second thread was booted')
      // With a job out, close is a destroy: the worker ran a chunk and is not reused.
      await process1(second, { offset: 0, input: Buffer.from('ab') })
      let answered = 0
      second.close!(() => answered++)
      assert.equal(answered, 1)
      assert.equal(workers.idleCount, 0)
    } finally {
      workers.close()
    }
  })
})
