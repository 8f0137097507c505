/**
 * How `maxConcurrency: 'auto'` ramps, on instances whose speed the test sets: a fake machine
 * with a fixed number of cores, each job holding one for a few milliseconds. The gains are
 * 2× or none, far from the 10 % rule, so timer jitter cannot change the choice.
 */
import assert from 'node:assert/strict'
import { availableParallelism } from 'node:os'
import { describe, it } from 'node:test'
import { PoolRunner, type GuestRunner, type Job, type LoadedGuest, type RunnerFactory, type RunnerHooks } from '../lib/index.js'

const JOB_MS = 4
const CHUNK = Buffer.alloc(1024, 'a')

/** Instances that share `cores`: a job waits for a free one, then holds it JOB_MS. */
function machine(cores: number): { factory: RunnerFactory; started: () => number } {
  let free = cores
  let started = 0
  const waiting: Array<() => void> = []
  const release = (): void => {
    free++
    waiting.shift()?.()
  }
  const onCore = (run: () => void): void => {
    const go = (): void => {
      free--
      setTimeout(() => {
        run()
        release()
      }, JOB_MS)
    }
    if (free > 0) go()
    else waiting.push(go)
  }
  const factory: RunnerFactory = (_guest, hooks) => {
    started++
    let gone = false
    // An instance runs its jobs one at a time, as a guest does.
    const queue: Job[] = []
    const next = (): void => {
      const job = queue[0]
      if (job === undefined || gone) return
      if (!job.input) {
        setImmediate(() => !gone && hooks.done(job))
        return
      }
      onCore(() => {
        if (gone) return
        hooks.output(job, job.input!)
        queue.shift()
        hooks.done(job)
        next()
      })
    }
    const runner: GuestRunner = {
      start: (callback) => void setImmediate(() => callback(gone ? new Error('destroyed') : null)),
      process: (job, callback) => {
        queue.push(job)
        if (queue.length === 1) next()
        callback(null)
      },
      snapshot: (callback) => callback(null),
      guestTimeMs: () => 0,
      resume: () => {},
      restart: (callback) => callback(null),
      destroy: () => {
        gone = true
      },
    }
    return runner
  }
  return { factory, started: () => started }
}

const GUEST = { name: 'fake.wasm' } as LoadedGuest
const OPTIONS = { bufferSize: CHUNK.length, limits: { maxOutputPerChunk: undefined, maxOutput: Infinity }, timeout: 1000, maxInFlight: 2 }

/** Feeds chunks until 'auto' has chosen, then ends the input; resolves with the pool's report and output. */
async function rampOn(cores: number): Promise<{ report: ReturnType<PoolRunner['concurrency']>; bytes: number; jobs: number; started: number }> {
  const { factory, started } = machine(cores)
  let bytes = 0
  let finished: () => void
  const end = new Promise<void>((resolve) => (finished = resolve))
  const hooks: RunnerHooks = {
    output: (_job, chunk) => {
      bytes += chunk.length
      return true
    },
    done: (job) => void (job.input === null && finished()),
    failed: (_job, err) => assert.fail(err),
  }
  const pool = new PoolRunner(factory, GUEST, hooks, OPTIONS, 'auto', true)
  await new Promise<void>((resolve, reject) => pool.start((err) => (err ? reject(err) : resolve())))
  let jobs = 0
  // Two seconds of jobs at most: a ramp of 100 ms windows is long done by then.
  while (pool.concurrency().reason === 'measuring' && jobs < 2000 / JOB_MS) {
    const job: Job = { offset: jobs * CHUNK.length, input: CHUNK }
    await new Promise<void>((resolve) => pool.process(job, () => resolve()))
    jobs++
  }
  pool.process({ offset: jobs * CHUNK.length, input: null }, () => {})
  await end
  const report = pool.concurrency()
  pool.destroy()
  return { report, bytes, jobs, started: started() }
}

describe("maxConcurrency: 'auto' ramp", () => {
  it('doubles the instances while throughput rises, and retires the whole step that did not raise it', async () => {
    const { report, bytes, jobs } = await rampOn(2)
    assert.equal(bytes, jobs * CHUNK.length, 'every chunk delivered')
    assert.deepEqual(report.samples.map((s) => s.instances), [1, 2, 4], JSON.stringify(report))
    assert.equal(report.instances, 2, JSON.stringify(report))
    assert.match(report.reason, /^4 instances raised throughput -?\d+ % over 2, under 10 %: 2 kept$/)
  })

  it('stays at one instance when a second does not help', async () => {
    const { report, started } = await rampOn(1)
    assert.deepEqual(report.samples.map((s) => s.instances), [1, 2], JSON.stringify(report))
    assert.equal(report.instances, 1)
    assert.match(report.reason, /^2 instances raised throughput -?\d+ % over 1, under 10 %: 1 kept$/)
    assert.equal(started, 2, 'the retired instance is not replaced')
  })

  it('stops at two instances per core when every doubling helps', async () => {
    const limit = 2 * availableParallelism()
    const { report } = await rampOn(limit)
    assert.equal(report.instances, limit, JSON.stringify(report))
    assert.equal(report.reason, `${limit} instances, 2 per core`)
    const tried = report.samples.map((s) => s.instances)
    assert.equal(tried[0], 1)
    for (let i = 1; i < tried.length; i++) assert.equal(tried[i], Math.min(2 * tried[i - 1]!, limit))
  })
})
