/**
 * How `maxConcurrency: 'auto'` ramps, on instances whose speed the test sets: a fake machine
 * with a fixed number of cores, each job holding one for a few milliseconds. The gains are
 * 2× or none, far from the 10 % rule, and the machine keeps its own schedule (see `machine`), so
 * a loaded test run's late timers cannot change the choice.
 */
import assert from 'node:assert/strict'
import { availableParallelism } from 'node:os'
import { describe, it } from 'node:test'
import { PoolRunner, type GuestRunner, type Job, type LoadedGuest, type RunnerFactory, type RunnerHooks } from '../lib/index.js'

const JOB_MS = 4
const CHUNK = Buffer.alloc(1024, 'a')

/** What the instances were asked to do beyond their chunks, and when, by input sent so far. */
interface Ends {
  /** `close()` calls: the input's job count when each came. */
  closed: number[]
  /** Flushes (a job without input). */
  flushed: number
}

/**
 * How far back a job may start: a timer that fired this late (another test file busy on both
 * cores) delays its callback, not the schedule, and the jobs after it catch up. With plain
 * timers, a window at 2 instances that lost a few milliseconds made 4 look 10 % faster.
 */
const SLACK_MS = 2 * JOB_MS

/**
 * Instances that share `cores`: a job takes the core free soonest for JOB_MS, and starts when
 * both that core and its instance's previous job are done, on the machine's schedule.
 */
function machine(cores: number, sent: () => number): { factory: RunnerFactory; started: () => number; ends: Ends } {
  let started = 0
  const ends: Ends = { closed: [], flushed: 0 }
  const coreFreeAt = new Array<number>(cores).fill(0)
  const onCore = (after: number, run: (end: number) => void): void => {
    const now = performance.now()
    let core = 0
    for (let i = 1; i < cores; i++) if (coreFreeAt[i]! < coreFreeAt[core]!) core = i
    const end = Math.max(coreFreeAt[core]!, after, now - SLACK_MS) + JOB_MS
    coreFreeAt[core] = end
    setTimeout(() => run(end), Math.max(0, end - now))
  }
  const factory: RunnerFactory = (_guest, hooks) => {
    started++
    let gone = false
    let lastEnd = 0
    // An instance runs its jobs one at a time, as a guest does.
    const queue: Job[] = []
    const next = (): void => {
      const job = queue[0]
      if (job === undefined || gone) return
      if (!job.input) {
        // Off the queue now: done() may hand this instance its next job before we return.
        queue.shift()
        ends.flushed++
        setImmediate(() => !gone && hooks.done(job))
        return
      }
      onCore(lastEnd, (end) => {
        lastEnd = end
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
      close: (callback) => {
        assert.equal(queue.length, 0, 'closed with a job out')
        ends.closed.push(sent())
        gone = true
        setImmediate(() => callback(null))
      },
    }
    return runner
  }
  return { factory, started: () => started, ends }
}

const abi = (hasFlush: boolean): LoadedGuest['abi'] => ({ kind: 'abi-v1', wasiImports: [], hasInitialize: false, hasInit: false, hasFlush, importedMemory: undefined })
const GUEST = { name: 'fake.wasm', abi: abi(false) } as LoadedGuest
/**
 * 8 queued to each instance: 32 ms of work, so a busy event loop feeding them late does not leave
 * one idle (at 2, a window at 2 instances lost 11 % to it and 4 looked the better choice).
 */
const IN_FLIGHT = 8
const OPTIONS = { bufferSize: CHUNK.length, limits: { maxOutputPerChunk: undefined, maxOutput: Infinity }, timeout: 1000, maxInFlight: IN_FLIGHT }

/**
 * Feeds chunks until 'auto' has chosen, then `after` more, then ends the input; resolves with the
 * pool's report and output, and what the instances were asked to do.
 */
async function rampOn(
  cores: number,
  { after = 0, guest = GUEST }: { after?: number; guest?: LoadedGuest } = {},
): Promise<{ report: ReturnType<PoolRunner['concurrency']>; bytes: number; jobs: number; chosenAt: number; started: number; ends: Ends }> {
  let jobs = 0
  const { factory, started, ends } = machine(cores, () => jobs)
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
  const pool = new PoolRunner(factory, guest, hooks, OPTIONS, 'auto', true)
  await new Promise<void>((resolve, reject) => pool.start((err) => (err ? reject(err) : resolve())))
  const send = async (): Promise<void> => {
    const job: Job = { offset: jobs * CHUNK.length, input: CHUNK }
    await new Promise<void>((resolve) => pool.process(job, () => resolve()))
    jobs++
  }
  // Two seconds of jobs at most: a ramp of 100 ms windows is long done by then.
  while (pool.concurrency().reason === 'measuring' && jobs < 2000 / JOB_MS) await send()
  const chosenAt = jobs
  while (jobs < chosenAt + after) await send()
  pool.process({ offset: jobs * CHUNK.length, input: null }, () => {})
  await end
  const report = pool.concurrency()
  pool.destroy()
  return { report, bytes, jobs, chosenAt, started: started(), ends }
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

  it('closes a retired instance of a guest without a flush once its chunks are done, not at the end', async () => {
    const { report, bytes, jobs, chosenAt, ends } = await rampOn(2, { after: 100 })
    assert.equal(bytes, jobs * CHUNK.length, 'every chunk delivered')
    assert.equal(report.instances, 2, JSON.stringify(report))
    assert.equal(ends.closed.length, 2, 'both retired instances closed')
    // Once the jobs still queued to them are done, sharing the cores with the two kept (which take
    // about as many new ones meanwhile): long before the input ends, 100 jobs after the choice.
    for (const at of ends.closed) assert.ok(at <= chosenAt + 4 * IN_FLIGHT, `closed at job ${at}, chosen at ${chosenAt}, ended at ${jobs}`)
    assert.equal(ends.flushed, 2, 'the two kept instances flush at the end')
  })

  it('keeps a retired instance of a guest with a flush to the end, and flushes it there', async () => {
    const { report, bytes, jobs, ends } = await rampOn(2, { after: 100, guest: { name: 'fake.wasm', abi: abi(true) } as LoadedGuest })
    assert.equal(bytes, jobs * CHUNK.length, 'every chunk delivered')
    assert.equal(report.instances, 2, JSON.stringify(report))
    assert.deepEqual(ends.closed, [])
    assert.equal(ends.flushed, 4, 'all four flush, in the pool order')
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
