import type { GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import type { LoadedGuest } from '../guest/load.js'
import { availableParallelism } from 'node:os'
import { noState, type ConcurrencyReport, type GuestRunner, type Job, type RunnerCallback, type RunnerFactory, type RunnerHooks, type RunnerOptions } from './runner.js'
import { closeRunner, WrappingRunner } from './wrapping.js'
import { logger } from '../log.js'

const log = logger('pool')

/**
 * 'auto' measures throughput over windows of at least this long and this many chunks. Each step
 * of the ramp costs a window at the old count, and on streams of a second most of the stream is
 * ramp: against 200 ms, 100 ms took 'auto' from 0.89× to 0.92× the best fixed setting for
 * `jitter` and from 0.80× to 0.87× for per-record `grep` (means of 4 runs of the bench's cells).
 */
const WINDOW_MS = 100
const WINDOW_JOBS = 8
/** An added instance stays only if it raised throughput by this much. */
const MIN_GAIN = 1.1
/** 'auto' tries up to this many instances per core. */
const AUTO_PER_CORE = 2


interface Instance {
  readonly runner: GuestRunner
  /** Jobs handed to it and not yet done. */
  queued: number
  /** It was asked to hold its output (returned false) and waits for `resume()`. */
  paused: boolean
  /**
   * 'auto' found it did not help: it takes no new chunks. A guest with a flush is still flushed
   * at the end; one without closes once its last chunk is done (`closeIfIdle`).
   */
  retired: boolean
}

interface Entry {
  readonly job: Job
  instance: Instance | undefined
  /** Output that arrived before every earlier job was delivered. */
  held: Buffer[]
  done: boolean
  skipped: WasmSandboxError | undefined
  /** The guest failed on it while an earlier job was still running: the stream fails when its turn comes. */
  failed: WasmSandboxError | undefined
}

/**
 * Runs a stateless guest on up to `size` instances at once, each in its own worker, and
 * delivers output in input order: a runner that drives runners. Each job goes to the instance
 * with the fewest queued; the oldest job's output passes straight through and a later job's is
 * held until every job before it is delivered, at most `holdLimit` bytes before the instance
 * that produces it is paused (the instance running the oldest job never is). The end of input
 * flushes each instance in turn. Instances past the first take a worker only if one is free at
 * once, so pooled streams never wait on each other for their extra instances. A failure, too,
 * comes in input order: a job that fails while earlier ones still run fails the stream only once
 * they are delivered (an earlier failure wins), as one instance would have.
 *
 * With `size` 'auto' it starts with one instance and, every window of chunks, doubles them while
 * the last doubling raised throughput by 10 % or more, up to two per core; the instances a
 * doubling that did not added, in two windows in a row, are retired (no new chunks). Output
 * never depends on the choice: order is kept either way.
 */
export class PoolRunner implements GuestRunner {
  private readonly factory: RunnerFactory
  private readonly guest: LoadedGuest
  private readonly hooks: RunnerHooks
  private readonly options: RunnerOptions
  private readonly size: number
  private readonly auto: boolean
  private readonly stateless: boolean
  private readonly holdLimit: number
  /** The guest has no flush (nor does a WASI run per record): an instance's output is its chunks'. */
  private readonly nothingToFlush: boolean
  private instances: Instance[] = []
  /** Extra instances still starting. */
  private readonly starting = new Set<GuestRunner>()
  /**
   * The first instance while it starts: in neither list yet, so a destroy (limits.deadline, an
   * abort) must reach it here, or it would finish starting after and keep its worker for good.
   */
  private first: GuestRunner | undefined
  /** The first instance of this start, for as long as it lives: its `init` output is the stream's. */
  private leader: GuestRunner | undefined
  /** Jobs not yet delivered, in input order. */
  private readonly order: Entry[] = []
  private readonly entries = new Map<Job, Entry>()
  private heldBytes = 0
  /** Downstream is full: deliver nothing until `resume()`. */
  private blocked = false
  /**
   * Runners paused before they were instances, by a full stderr (the first and spares write to
   * it as they start, a reactor's `_initialize`) or the first one's `init` output: `resume()`
   * reaches them here, or `unpause` later.
   */
  private readonly heldEarly = new Set<GuestRunner>()
  /**
   * Spares that came too late and are closing: after the end their frames go nowhere, and one
   * that a full consumer had paused must be let go on, or it never reaches its close.
   */
  private readonly closing = new Set<GuestRunner>()
  /** The caller's callback for a job, held while every instance is full. */
  private accepting: RunnerCallback | undefined
  private flushing = 0
  private pastGuestMs = 0
  private failed = false
  /** Every job, the end of input too, was delivered: spares still starting close, not die. */
  private ended = false
  /** A job failed behind earlier ones still running: take no new jobs, fail once those are delivered. */
  private failing = false
  private destroyed = false
  /** 'auto': still trying more instances, the window being measured, and what was measured. */
  private growing: boolean
  private windowStart = 0
  private windowBytes = 0
  private windowJobs = 0
  /**
   * The first window is not a measure: it holds the pipeline filling and the guest's code still
   * on its first tier, so it read low, and the second instance looked like a gain it was not
   * (per-record grep: 0.60 MB/s, then 0.89 with two, then three tried at 0.59 and retired).
   * It lasts WINDOW_JOBS jobs, not WINDOW_MS: a whole window at one instance cost a guest that
   * wants two about 10 % of a one-second stream.
   */
  private warmedUp = false
  private readonly samples: Array<{ instances: number; mbps: number }> = []
  private reason: string
  /** Instances taking chunks when the pool stopped, for the report after the end. */
  private lastActive = 0

  /** The clock 'auto' measures its windows by; a test gives one that runs on its own schedule. */
  private readonly now: () => number

  constructor(
    factory: RunnerFactory,
    guest: LoadedGuest,
    hooks: RunnerHooks,
    options: RunnerOptions,
    size: number | 'auto',
    stateless: boolean,
    now: () => number = () => performance.now(),
  ) {
    this.now = now
    this.factory = factory
    this.guest = guest
    this.hooks = hooks
    this.options = options
    this.auto = size === 'auto'
    // 'auto' may go past the cores: an instance also waits for its hand-offs, and another one
    // fills that time (measured: jitter at 4 KiB chunks ran 1.6 MB/s on 2 instances, 2.0 on 4,
    // on 2 cores). The 10 % rule stops it where that stops paying.
    this.size = size === 'auto' ? availableParallelism() * AUTO_PER_CORE : size
    this.growing = this.auto && this.size > 1
    this.reason = this.auto ? (this.size > 1 ? 'measuring' : 'one core') : 'maxConcurrency as given'
    this.stateless = stateless
    this.holdLimit = Math.max(options.highWaterMark ?? options.bufferSize, 1)
    this.nothingToFlush = guest.abi.kind === 'wasi-command' || !guest.abi.hasFlush
  }

  /** A stateless guest starts fresh: a restored state has nothing to give it. */
  start(callback: RunnerCallback): void {
    if (!this.stateless) {
      callback(statefulPoolError(this.guest, this.size))
      return
    }
    this.failed = false
    this.failing = false
    this.ended = false
    const first = this.spawn(this.options)
    this.first = this.leader = first
    first.start((err) => {
      if (this.first === first) this.first = undefined
      if (err) {
        first.destroy()
        callback(err)
        return
      }
      this.instances.push(this.instanceOf(first))
      this.windowStart = this.now()
      callback(null)
    })
    if (!this.auto) for (let i = 1; i < this.size; i++) this.startSpare()
  }

  concurrency(): ConcurrencyReport {
    const instances = this.instances.length > 0 ? this.active() : this.lastActive
    return { instances, auto: this.auto, reason: this.reason, samples: this.samples }
  }

  private active(): number {
    let n = 0
    for (const instance of this.instances) if (!instance.retired) n++
    return n
  }

  process(job: Job, callback: RunnerCallback): void {
    if (this.failing) {
      // Its output would never be delivered: hold the caller until the failure is reported.
      this.accepting = callback
      return
    }
    const entry: Entry = { job, instance: undefined, held: [], done: false, skipped: undefined, failed: undefined }
    this.order.push(entry)
    this.entries.set(job, entry)
    if (!job.input) {
      callback(null)
      this.advance()
      return
    }
    let instance: Instance | undefined
    for (const candidate of this.instances) {
      if (!candidate.retired && (instance === undefined || candidate.queued < instance.queued)) instance = candidate
    }
    if (instance === undefined) {
      callback(errors.noInstance({ module: this.guest.name, exportName: 'process_chunk', offset: job.offset }))
      return
    }
    entry.instance = instance
    instance.queued++
    instance.runner.process(job, () => this.accept(callback))
  }

  snapshot(callback: (err: Error | null, state?: GuestState) => void): void {
    callback(null, noState())
  }

  guestTimeMs(): number {
    let total = this.pastGuestMs
    for (const instance of this.instances) total += instance.runner.guestTimeMs()
    return total
  }

  resume(): void {
    this.blocked = false
    // Cleared first: a runner that a resume fills up again is held again, not forgotten.
    const held = [...this.heldEarly]
    this.heldEarly.clear()
    for (const runner of held) runner.resume()
    this.advance()
  }

  restart(callback: RunnerCallback): void {
    this.stopAll()
    this.order.length = 0
    this.entries.clear()
    this.heldBytes = 0
    this.blocked = false
    this.flushing = 0
    this.start(callback)
  }

  destroy(): void {
    this.destroyed = true
    // After a clean end a spare still starting closes once it has (startSpare), and its worker
    // serves the next stream: a short stream on a pool of N would otherwise end N - 1 threads.
    if (this.ended) {
      for (const runner of [...this.starting, ...this.heldEarly, ...this.closing]) runner.resume()
      this.heldEarly.clear()
      this.starting.clear()
    } else {
      // Not a clean end: a spare closing for this stream ends with it (it may be held by a full stderr).
      for (const runner of this.closing) runner.destroy()
      this.closing.clear()
      this.heldEarly.clear()
    }
    this.stopAll()
  }

  private stopAll(): void {
    if (this.instances.length > 0) this.lastActive = this.active()
    if (this.growing) this.settle(`the stream ended while measuring, at ${this.lastActive} instance${this.lastActive === 1 ? '' : 's'}`)
    for (const instance of this.instances) {
      this.pastGuestMs += instance.runner.guestTimeMs()
      instance.runner.destroy()
    }
    for (const runner of this.starting) runner.destroy()
    this.starting.clear()
    // It calls back with the error of a stopped instance, which the start above passes on.
    this.first?.destroy()
    this.instances = []
    this.accepting = undefined
  }

  /** An extra instance, if a worker is free now; without one the pool runs with fewer. */
  private startSpare(): void {
    const runner = this.spawn({ ...this.options, spareWorker: true })
    this.starting.add(runner)
    runner.start((err) => {
      const ours = this.starting.delete(runner)
      if (err) {
        runner.destroy()
        if (ours && this.growing) this.settle(`no worker free for more than ${this.active() + this.starting.size} instance${this.active() + this.starting.size === 1 ? '' : 's'}`)
        return
      }
      // Too late to help once the end of input is being flushed: it never ran a chunk, so it
      // ends without a flush, and its worker is kept for the next stream.
      if (this.ended || (ours && this.flushing > 0)) {
        this.closing.add(runner)
        if (this.ended) runner.resume()
        closeRunner(runner, () => this.closing.delete(runner))
        return
      }
      if (!ours || this.destroyed || this.failed) {
        runner.destroy()
        return
      }
      this.instances.push(this.instanceOf(runner))
      if (this.growing && this.starting.size === 0) this.restartWindow()
      this.release()
    })
  }

  private instanceOf(runner: GuestRunner): Instance {
    return { runner, queued: 0, paused: this.heldEarly.delete(runner), retired: false }
  }

  private spawn(options: RunnerOptions): GuestRunner {
    // A runner reports about its own jobs only; one stopped (restart, destroy) is not ours any more.
    const ours = (job: Job): { instance: Instance; entry: Entry } | undefined => {
      const instance = this.instances.find((i) => i.runner === runner)
      const entry = this.entries.get(job)
      return instance && entry ? { instance, entry } : undefined
    }
    const runner = this.factory(
      this.guest,
      {
        output: (job, chunk) => {
          const found = ours(job)
          if (found) return this.onOutput(found.instance, found.entry, chunk)
          // No job's: an `init` wrote it, outside the ABI's contract. The first instance's goes
          // out, as one instance's would; an extra instance's would repeat it, and the output
          // never depends on the pool's size. Neither may pause a runner nobody resumes.
          if (runner !== this.leader || this.ended || this.destroyed || this.failed) return true
          const room = this.hooks.output(job, chunk)
          if (!room) this.heldEarly.add(runner)
          return room
        },
        done: (job) => {
          const found = ours(job)
          if (found) this.onDone(found.instance, found.entry)
        },
        failed: (job, err) => this.onFailed(runner, job, err),
        skipped: (job, err) => {
          const found = ours(job)
          if (found) this.onSkipped(found.instance, found.entry, err)
        },
        stderr: (chunk) => {
          // The stream is over: a spare still starting or closing writes to no one.
          if (this.ended || this.destroyed || this.failed) return true
          const room = this.hooks.stderr?.(chunk)
          // The instance holds its frames now; the pool's resume() must reach it.
          if (room === false) {
            const instance = this.instances.find((i) => i.runner === runner)
            if (instance) instance.paused = true
            else this.heldEarly.add(runner)
          }
          return room
        },
        // Messages come as each instance runs, so chunks' messages may interleave; each has its offset.
        guestLog: (entry) => {
          if (!this.ended && !this.destroyed && !this.failed) this.hooks.guestLog?.(entry)
        },
      },
      options,
    )
    return runner
  }

  /** The instance took the job: the caller may send the next once some instance has room. */
  private accept(callback: RunnerCallback): void {
    if (this.hasRoom() && !this.failing) callback(null)
    else this.accepting = callback
  }

  private hasRoom(): boolean {
    const limit = this.options.maxInFlight
    for (const instance of this.instances) if (!instance.retired && instance.queued < limit) return true
    return false
  }

  /**
   * 'auto': one window measured; double the instances, or settle. Doubling reaches the cores in
   * few windows (most of a short stream is ramp), and a step that did not raise throughput is
   * undone whole: the instances it added are retired. Not on one window's word: a step that
   * seems not to pay gets a second window, which decides (the reason gives its gain). Keeping a step
   * that did not help costs an idle worker; undoing one that did costs half the throughput, and
   * a 100 ms window here reads tens of percent low now and then (per-record `grep` on 2 cores:
   * 2 instances read 7 % under 1 and the stream ran at 0.6× the speed of 2).
   */
  private measure(bytes: number): void {
    this.windowBytes += bytes
    this.windowJobs++
    const elapsed = this.now() - this.windowStart
    // The warm-up window is WINDOW_JOBS jobs, however short: the measuring starts sooner.
    if (this.windowJobs < WINDOW_JOBS || (elapsed < WINDOW_MS && this.warmedUp)) return
    const mbps = this.windowBytes / 1048.576 / elapsed
    const instances = this.active()
    this.restartWindow()
    // The window ends when the last new instance joins (startSpare): it measures them all.
    if (this.starting.size > 0) return
    if (!this.warmedUp) {
      this.warmedUp = true
      return
    }
    const last = this.samples.at(-1)
    this.samples.push({ instances, mbps })
    if (!last) return this.grow(instances)
    const doubted = last.instances === instances
    const before = doubted ? this.samples.at(-3) : last
    if (!before || before.instances >= instances) return this.grow(instances)
    if (mbps >= before.mbps * MIN_GAIN) return this.grow(instances)
    if (!doubted) return
    this.settle(
      `${instances} instances raised throughput ${Math.round((mbps / before.mbps - 1) * 100)} % over ${before.instances}, under ${Math.round((MIN_GAIN - 1) * 100)} %, in two windows: ${before.instances} kept`,
    )
    this.retire(instances - before.instances)
  }

  /** The step to `instances` paid: double them, or settle at the most the pool runs. */
  private grow(instances: number): void {
    if (instances >= this.size) {
      this.settle(`${instances} instances, ${AUTO_PER_CORE} per core`)
      return
    }
    for (let added = 0; added < instances && instances + added < this.size; added++) this.startSpare()
  }

  private restartWindow(): void {
    this.windowStart = this.now()
    this.windowBytes = this.windowJobs = 0
  }

  /** The last `count` instances added take no new chunks. */
  private retire(count: number): void {
    for (let i = this.instances.length - 1; i > 0 && count > 0; i--) {
      const instance = this.instances[i]!
      if (instance.retired) continue
      instance.retired = true
      count--
      this.closeIfIdle(instance)
    }
  }

  /**
   * A retired instance with nothing to flush is done once its last chunk is: it closes, and its
   * worker goes back to the sandbox rather than sit idle to the end of the stream (a step undone
   * on 8 cores would hold 8 of `maxWorkers`). Its chunks' output is already with their entries.
   */
  private closeIfIdle(instance: Instance): void {
    if (!instance.retired || instance.queued > 0 || !this.nothingToFlush) return
    const index = this.instances.indexOf(instance)
    if (index === -1) return
    this.instances.splice(index, 1)
    this.pastGuestMs += instance.runner.guestTimeMs()
    const runner = instance.runner
    // Held by a full stderr: resume() must still reach it, or it never gets to its close.
    if (instance.paused) this.heldEarly.add(runner)
    this.closing.add(runner)
    closeRunner(runner, (err) => {
      this.closing.delete(runner)
      // Every chunk it ran is delivered: a failure now changes no output, only loses its worker.
      if (err) log('a retired instance failed as it closed: %s', err.message)
    })
  }

  private settle(reason: string): void {
    this.growing = false
    this.reason = reason
  }

  /** Room opened (a job done, an instance joined): hand back a held accept. */
  private release(): void {
    const callback = this.accepting
    if (callback && this.hasRoom() && !this.failing) {
      this.accepting = undefined
      callback(null)
    }
  }

  private onOutput(instance: Instance, entry: Entry, chunk: Buffer): boolean {
    if (entry === this.order[0] && entry.held.length === 0 && !this.blocked) {
      if (this.hooks.output(entry.job, chunk)) return true
      this.blocked = true
      instance.paused = true
      return false
    }
    entry.held.push(chunk)
    this.heldBytes += chunk.length
    if (this.blocked || (this.heldBytes > this.holdLimit && entry !== this.order[0])) {
      instance.paused = true
      return false
    }
    return true
  }

  private onDone(instance: Instance, entry: Entry): void {
    if (!entry.job.input) {
      this.flushNext()
      return
    }
    instance.queued--
    entry.done = true
    // Failing, an instance fewer: a window now would grow the pool for a stream about to fail.
    if (this.growing && !this.failing) this.measure(entry.job.input.length)
    this.closeIfIdle(instance)
    this.release()
    this.advance()
  }

  private onSkipped(instance: Instance, entry: Entry, err: WasmSandboxError): void {
    const job = entry.job
    if (job.input) instance.queued--
    entry.done = true
    entry.skipped = err
    for (const chunk of entry.held) this.heldBytes -= chunk.length
    entry.held = []
    if (!job.input) {
      this.flushNext()
      return
    }
    // Not closed here even if retired: its recovery is still under way, and a close now would
    // leave that recovery to start a worker no list holds. It ends with the stream instead.
    this.release()
    this.advance()
  }

  private onFailed(runner: GuestRunner, job: Job | undefined, err: WasmSandboxError): void {
    if (this.failed || this.destroyed) return
    const entry = job?.input ? this.entries.get(job) : undefined
    const index = this.instances.findIndex((i) => i.runner === runner)
    if (!entry || entry === this.order[0] || index === -1) {
      this.fail(job, err)
      return
    }
    // Earlier jobs still run on the other instances: one instance would have delivered their
    // output and then failed here (or failed on one of them first), so the failure waits its turn.
    entry.failed = err
    for (const chunk of entry.held) this.heldBytes -= chunk.length
    entry.held = []
    this.failing = true
    const [gone] = this.instances.splice(index, 1)
    this.pastGuestMs += gone!.runner.guestTimeMs()
    gone!.runner.destroy()
    this.advance()
  }

  private fail(job: Job | undefined, err: WasmSandboxError): void {
    this.failed = true
    this.stopAll()
    this.hooks.failed(job, err)
  }

  /** Delivers, in input order, every job whose turn has come, as far as downstream takes it. */
  private advance(): void {
    const order = this.order
    while (order.length > 0 && !this.blocked) {
      const head = order[0]!
      if (head.failed) {
        this.fail(head.job, head.failed)
        return
      }
      while (head.held.length > 0) {
        const chunk = head.held.shift()!
        this.heldBytes -= chunk.length
        if (!this.hooks.output(head.job, chunk)) {
          this.blocked = true
          return
        }
      }
      if (!head.job.input) {
        if (this.flushing === 0) this.flushNext()
        break
      }
      if (!head.done) break
      order.shift()
      this.entries.delete(head.job)
      if (head.skipped) this.hooks.skipped?.(head.job, head.skipped)
      else this.hooks.done(head.job)
    }
    if (!this.blocked) this.unpause()
  }

  /** Paused instances go on once there is room again; the oldest job's never waits for room. */
  private unpause(): void {
    const head = this.order[0]?.instance
    const room = this.heldBytes <= this.holdLimit
    for (const instance of this.instances) {
      if (instance.paused && (room || instance === head)) {
        instance.paused = false
        instance.runner.resume()
      }
    }
  }

  /** Every chunk is delivered: each instance flushes, one after another, in the pool's order. */
  private flushNext(): void {
    const head = this.order[0]!
    if (this.flushing === this.instances.length) {
      this.order.shift()
      this.entries.delete(head.job)
      this.ended = true
      this.hooks.done(head.job)
      return
    }
    const instance = this.instances[this.flushing++]!
    instance.runner.process(head.job, noop)
  }
}

/** `maxConcurrency: 'auto'` for a guest that keeps state: one instance, and the report says why. */
export class FixedConcurrency extends WrappingRunner {
  protected readonly inner: GuestRunner
  private readonly why: string

  constructor(inner: GuestRunner, why: string) {
    super()
    this.inner = inner
    this.why = why
  }

  override concurrency(): ConcurrencyReport {
    return { instances: 1, auto: true, reason: this.why, samples: [] }
  }
}

/** The pool refuses a guest that keeps state: its chunks must run in order on one instance. */
export function statefulPoolError(guest: LoadedGuest, size: number): WasmSandboxError {
  return errors.invalidOption(
    `maxConcurrency ${size} runs chunks of one stream on several instances at once, but ${guest.name} is not stateless: each chunk's output could depend on the chunks before it, which another instance never saw. Use maxConcurrency 1, or, if the guest keeps nothing between chunks, say so with stateless: true (or a "wasm-sandbox.stateless" custom section in the module)`,
  )
}

function noop(): void {}
