/**
 * Warm workers: streams of a sandbox reuse idle worker threads, at most `maxWorkers` at once,
 * and a thread is reused only after a clean end, with a fresh guest instance every time.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { availableParallelism } from 'node:os'
import type { Worker } from 'node:worker_threads'
import { createSandbox, wasmTransform, type Sandbox } from '../lib/index.js'
import { WorkerPool } from '../lib/runners/worker-pool.js'
import { example, fixture, upperRef } from './helpers/reference.js'
import { run } from './helpers/streams.js'
import { runChild, runNode } from './helpers/child.js'

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits until `test` holds, checking every few milliseconds, for at most `ms`. */
async function until(test: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms
  while (!test()) {
    if (Date.now() > end) return false
    await delay(5)
  }
  return true
}

describe('warm workers', () => {
  it('a reused worker starts every guest fresh: no memory or globals from the stream before', async () => {
    const sandbox = createSandbox({ maxWorkers: 1, bufferSize: 1 })
    // Within one stream the probe counts up, so the test can see state when there is some.
    const within = await run(sandbox.createStreamProcessor(fixture('state-probe.wasm')).stream(), Buffer.from('abc'), [1, 1, 1])
    assert.equal(within.toString(), '001122')
    for (let i = 0; i < 5; i++) assert.equal((await sandbox.call(fixture('state-probe.wasm'), 'x')).toString(), '00')
    assert.deepEqual(sandbox.workers(), { max: 1, live: 1, idle: 1, waiting: 0 }, 'one thread ran all six streams')
    sandbox.close()
  })

  it('one thread runs different modules and kinds one after another', async () => {
    const sandbox = createSandbox({ maxWorkers: 1 })
    const input = Buffer.from('mixed Case input\n')
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(await sandbox.call(example('upper.wasm'), input), upperRef(input))
      assert.deepEqual(await sandbox.call(fixture('wasi-cat.wasm'), input), input)
      assert.equal((await sandbox.call(fixture('state-probe.wasm'), input)).toString(), '00')
    }
    assert.equal(sandbox.workers().live, 1)
    sandbox.close()
  })

  const failures: Array<[string, (sandbox: Sandbox) => Promise<unknown>]> = [
    ['trapped', (sandbox) => sandbox.call(fixture('unreachable.wasm'), 'x')],
    ['timed out', (sandbox) => sandbox.call(fixture('loop-process.wasm'), 'x')],
    ['failed with a non-zero WASI exit', (sandbox) => sandbox.call(fixture('wasi-exit.wasm'), 'x')],
  ]
  for (const [what, fail] of failures) {
    it(`a worker whose guest ${what} is terminated, never reused`, async () => {
      const sandbox = createSandbox({ maxWorkers: 1, limits: { timeout: 100 } })
      await sandbox.call(fixture('state-probe.wasm'), 'x')
      assert.deepEqual(sandbox.workers(), { max: 1, live: 1, idle: 1, waiting: 0 })
      await assert.rejects(fail(sandbox))
      assert.equal(sandbox.workers().idle, 0, 'the failed worker went back to the pool')
      assert.ok(await until(() => sandbox.workers().live === 0), 'the failed worker is still alive')
      // The next stream gets a new thread and works.
      assert.equal((await sandbox.call(fixture('state-probe.wasm'), 'x')).toString(), '00')
      sandbox.close()
    })
  }

  it('a worker destroyed mid-call is terminated, never reused', async () => {
    const sandbox = createSandbox({ maxWorkers: 1, limits: { timeout: 60_000 } })
    const stream = sandbox.createStreamProcessor(fixture('loop-process.wasm')).stream()
    stream.on('error', () => {})
    stream.write(Buffer.from('x'))
    await new Promise((resolve) => stream.once('data', resolve))
    assert.deepEqual(sandbox.workers(), { max: 1, live: 1, idle: 0, waiting: 0 })
    stream.destroy()
    assert.ok(await until(() => sandbox.workers().live === 0), 'the busy worker outlived its stream')
    assert.equal(sandbox.workers().idle, 0)
  })

  it('maxWorkers holds under 200 concurrent streams, and no stream is lost', async () => {
    const sandbox = createSandbox({ maxWorkers: 3 })
    let most = 0
    let mostWaiting = 0
    const sample = setInterval(() => {
      const now = sandbox.workers()
      most = Math.max(most, now.live)
      mostWaiting = Math.max(mostWaiting, now.waiting)
    }, 1)
    const inputs = Array.from({ length: 200 }, (_, i) => Buffer.from(`stream ${i}: ${'abc'.repeat(i)}\n`))
    const outputs = await Promise.all(
      inputs.map(async (input) => {
        const out = await sandbox.call(example('upper.wasm'), input)
        most = Math.max(most, sandbox.workers().live)
        return out
      }),
    )
    clearInterval(sample)
    outputs.forEach((out, i) => assert.deepEqual(out, upperRef(inputs[i]!), `stream ${i}`))
    assert.ok(most <= 3, `${most} workers alive at once`)
    assert.ok(mostWaiting > 0, 'the bound never made a stream wait: the test tests nothing')
    sandbox.close()
  })

  it('a stream destroyed while it waits for a worker gives up its place', async () => {
    const sandbox = createSandbox({ maxWorkers: 1 })
    const processor = sandbox.createStreamProcessor(example('upper.wasm'))
    const first = processor.stream()
    first.write(Buffer.from('a'))
    await new Promise((resolve) => first.once('data', resolve))
    const second = processor.stream()
    second.on('error', () => {})
    second.write(Buffer.from('b'))
    assert.ok(await until(() => sandbox.workers().waiting === 1))
    second.destroy()
    assert.ok(await until(() => sandbox.workers().waiting === 0))
    first.end()
    first.resume()
    await new Promise((resolve) => first.once('end', resolve))
    assert.deepEqual(sandbox.workers(), { max: 1, live: 1, idle: 1, waiting: 0 })
    // The place given up was not handed to anyone: a third stream gets the idle worker.
    assert.deepEqual(await sandbox.call(example('upper.wasm'), 'c'), Buffer.from('C'))
    sandbox.close()
  })

  it('destroy with every worker busy leaves no worker, and the process exits by itself', async () => {
    const { code, stdout, timedOut } = await runChild('pool-destroy', [], 20_000)
    assert.equal(timedOut, false, 'the child did not exit by itself')
    assert.equal(code, 0)
    const { busy, after } = JSON.parse(stdout)
    assert.deepEqual(busy, { max: 2, live: 2, idle: 0, waiting: 2 })
    assert.equal(after.waiting, 0)
    assert.equal(after.idle, 0)
  })

  it('idle workers end after their idle time', async () => {
    const pool = new WorkerPool({ maxWorkers: 2, idleMs: 50 })
    const stream = wasmTransform(example('upper.wasm'))
    void stream
    const got = await new Promise<import('node:worker_threads').Worker>((resolve, reject) => pool.acquire((err, w) => (err ? reject(err) : resolve(w!))))
    pool.release(got)
    assert.equal(pool.idleCount, 1)
    assert.ok(await until(() => pool.size === 0, 3000), 'the idle worker was never ended')
    stream.destroy()
  })

  it('a waiting request takes a worker handed back before the thread booted for it is online', async () => {
    const pool = new WorkerPool({ idleMs: 50 })
    const acquire = (): Promise<Worker> => new Promise((resolve, reject) => pool.acquire((err, w) => (err ? reject(err) : resolve(w!))))
    const first = await acquire()
    assert.equal(pool.bootingCount, 0)
    const second = acquire()
    assert.equal(pool.bootingCount, 1, 'a thread boots for the waiting request')
    pool.release(first)
    assert.equal(await second, first, 'the worker handed back went to the request waiting for one')
    assert.ok(await until(() => pool.bootingCount === 0 && pool.idleCount === 1), 'the thread booted for it went idle')
    assert.equal(pool.size, 2)
    pool.release(first)
    assert.ok(await until(() => pool.size === 0, 3000), 'the idle workers were never ended')
  })

  it('a burst of requests boots at most one thread per core at a time, and each gets a worker', async () => {
    const pool = new WorkerPool({ idleMs: 50 })
    let most = 0
    const requests = Array.from({ length: 3 * availableParallelism() + 1 }, () => {
      const got = new Promise<Worker>((resolve, reject) => pool.acquire((err, w) => (err ? reject(err) : resolve(w!))))
      most = Math.max(most, pool.bootingCount)
      return got
    })
    assert.equal(pool.bootingCount, availableParallelism())
    assert.equal(pool.waitingCount, requests.length)
    const sample = setInterval(() => (most = Math.max(most, pool.bootingCount)), 1)
    const workers = await Promise.all(requests)
    clearInterval(sample)
    assert.equal(most, availableParallelism(), 'more threads booted at once than cores')
    assert.equal(new Set(workers).size, requests.length, 'a worker given to two requests')
    assert.equal(pool.waitingCount, 0)
    for (const worker of workers) pool.release(worker)
    assert.ok(await until(() => pool.size === 0, 3000), 'the idle workers were never ended')
  })

  it("a pool's extra instance never takes the slot a waiting request has no thread for yet", async () => {
    // More waiting requests than threads boot at once: the last slot is the unserved one's. A
    // spare took it, and a chain of a sandbox's streams with a pooled one last hung for good.
    const cores = availableParallelism()
    const pool = new WorkerPool({ maxWorkers: cores + 1, idleMs: 50 })
    const requests = Array.from({ length: cores + 1 }, () => new Promise<Worker>((resolve, reject) => pool.acquire((err, w) => (err ? reject(err) : resolve(w!)))))
    assert.equal(pool.bootingCount, cores)
    let spare: Worker | undefined | 'none' = 'none'
    pool.acquire((err, worker) => {
      assert.equal(err, null)
      spare = worker
    }, false)
    assert.equal(spare, undefined, 'the extra instance took the last slot')
    const workers = await Promise.all(requests)
    assert.equal(pool.size, cores + 1)
    for (const worker of workers) pool.release(worker)
    assert.ok(await until(() => pool.size === 0, 3000), 'the idle workers were never ended')
  })

  it('close() also ends a thread still booting for a request since withdrawn', async () => {
    const pool = new WorkerPool({ idleMs: 60_000 })
    const withdraw = pool.acquire(() => assert.fail('a withdrawn request was served'))
    assert.equal(pool.bootingCount, 1)
    withdraw()
    pool.close()
    assert.ok(await until(() => pool.size === 0, 5000), `the thread stayed idle after close(): ${pool.size} live, ${pool.idleCount} idle`)
  })

  it('close() ends a busy worker once it is handed back, unless a request waits for it', async () => {
    const pool = new WorkerPool({ idleMs: 60_000 })
    const acquire = (): Promise<Worker> => new Promise((resolve, reject) => pool.acquire((err, w) => (err ? reject(err) : resolve(w!))))
    const [a, b] = [await acquire(), await acquire()]
    pool.close()
    const waiting = acquire()
    pool.release(a)
    assert.equal(await waiting, a, 'the request waiting for a worker did not get the one handed back')
    pool.release(b)
    assert.equal(pool.idleCount, 0, 'a worker handed back after close() was kept idle')
    pool.release(a)
    assert.equal(pool.idleCount, 1, 'a worker handed out after close() is kept, as before any close')
    pool.close()
    assert.ok(await until(() => pool.size === 0, 5000), `${pool.size} workers live after close()`)
  })

  it('a short stream on a pool, then sandbox.close() at once: no worker is left, not even its extra instances\'', async () => {
    // The extra instances still starting when the call ends close afterwards and hand their
    // workers back after the sandbox was closed: they sat idle for the idle time (2 s).
    const sandbox = createSandbox({ maxConcurrency: 4, stateless: true })
    assert.equal((await sandbox.call(example('upper.wasm'), 'x')).toString(), 'X')
    sandbox.close()
    assert.ok(await until(() => sandbox.workers().live === 0, 1000), `left after close(): ${JSON.stringify(sandbox.workers())}`)
  })

  it('a thread that dies before it is online fails the request it was booted for, and the next boots anew', async () => {
    const pool = new WorkerPool({ idleMs: 50 })
    const acquire = (): Promise<Worker> => new Promise((resolve, reject) => pool.acquire((err, w) => (err ? reject(err) : resolve(w!))))
    process.once('worker', (worker: Worker) => void worker.terminate())
    await assert.rejects(acquire(), /exited with code \d+ before it was online/)
    assert.equal(pool.waitingCount, 0)
    const worker = await acquire()
    pool.release(worker)
    assert.ok(await until(() => pool.size === 0, 3000), 'the idle worker was never ended')
  })

  it("workers' rings give their memory back: rounds of 200 rings leave the RSS where one round did", async () => {
    // Rings were SharedArrayBuffers, which Node allocates with calloc: once a few had been freed,
    // glibc served the next from its heap, cleared all 2 MiB of each, and kept them when freed
    // (RSS +400 MiB from the third round on here; a socket server grew 360 MiB a wave).
    const ringUrl = new URL('../lib/runners/ring.js', import.meta.url).href
    const script = `
      import { FrameRing } from ${JSON.stringify(ringUrl)}
      const chunk = new Uint8Array(4096).fill(7)
      const rss = []
      for (let round = 0; round < 6; round++) {
        let rings = []
        for (let i = 0; i < 200; i++) {
          const ring = new FrameRing(2 * 1024 * 1024)
          // 40 KiB through each, as a short stream sends.
          for (let k = 0; k < 10; k++) { ring.write(1, k, 0, 0, 0, chunk, 0, chunk.length); ring.peek(); ring.consume() }
          rings.push(ring)
        }
        rings = null
        globalThis.gc()
        await new Promise((resolve) => setTimeout(resolve, 50))
        rss.push(process.memoryUsage().rss)
      }
      console.log(JSON.stringify(rss))
    `
    const result = await runNode(['--expose-gc', '--input-type=module', '-e', script], 30_000)
    assert.equal(result.code, 0, result.stderr)
    const rss = JSON.parse(result.stdout) as number[]
    const mib = (n: number): string => `${(n / 1048576).toFixed(0)} MiB`
    assert.ok(Math.max(...rss) - rss[0]! < 64 * 1048576, `RSS after each round: ${rss.map(mib).join(', ')}`)
  })

  it('maxWorkers is checked, and refused on a single stream', () => {
    for (const bad of [0, 1.5, -1, '2', NaN]) {
      assert.throws(() => createSandbox({ maxWorkers: bad as number }), { code: 'ERR_WASM_INVALID_OPTION' })
    }
    assert.equal(createSandbox({ maxWorkers: Infinity }).workers().max, Infinity)
    assert.throws(() => wasmTransform(example('upper.wasm'), { maxWorkers: 2 }), { code: 'ERR_WASM_INVALID_OPTION', message: /createSandbox/ })
  })
})
