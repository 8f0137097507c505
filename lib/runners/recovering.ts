import type { GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import type { GuestLogEntry } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import { logger } from '../log.js'
import { WrappingRunner } from './wrapping.js'
import type { GuestRunner, Job, RunnerCallback, RunnerFactory, RunnerHooks, RunnerOptions } from './runner.js'

const log = logger('recovery')

/**
 * Completed jobs kept for replay before the guest's state is captured again. A failure costs at
 * most this many chunks of replay; a stateful stream pays one snapshot (a copy of the guest's
 * memory) per this many chunks.
 */
export const REPLAY_LOG_JOBS = 16

export interface RecoveryOptions {
  /** `'skip'` drops the failed job; a number retries it that many times. */
  strategy: 'skip' | { retry: number }
  /**
   * The guest keeps nothing between chunks, so a fresh `init` is as good as its last state:
   * nothing is logged or snapshotted.
   */
  stateless: boolean
}

/**
 * Recovery as a runner around a runner. A job's output is held until the job is done, so a
 * failed job contributes nothing and a retried one appears once; the hold is one job's output,
 * bounded by `limits.maxOutputPerChunk` (options refuse an unbounded one with recovery).
 *
 * After a failure the inner instance is gone. A stateful guest is brought back to where it
 * stood before the failed job: its last captured state (`base`, the start or resume state, or
 * the latest snapshot) plus the completed jobs since (`replayLog`) run again with their output
 * discarded. Then the failed job is retried, or skipped, and the jobs queued behind it resent.
 */
export class RecoveringRunner extends WrappingRunner {
  protected readonly inner: GuestRunner
  private readonly hooks: RunnerHooks
  private readonly options: RecoveryOptions
  private readonly guestName: string
  private readonly streamingProgram: boolean
  /** Jobs handed to the inner runner and not yet done, oldest first. */
  private pending: Job[] = []
  /** Output of the oldest pending job. */
  private readonly held: Buffer[] = []
  private base: GuestState | undefined
  private replayLog: Job[] = []
  private attempts = 0
  private recovering = false
  /** Outer consumer asked us to hold output: so we ask the inner runner to hold too. */
  private paused = false
  /** A job (and its callback) that arrived while recovering or while waiting to be idle. */
  private waiting: { job: Job; callback: RunnerCallback } | undefined
  private generation = 0
  private destroyed = false

  constructor(factory: RunnerFactory, guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions, recovery: RecoveryOptions) {
    super()
    this.hooks = hooks
    this.options = recovery
    this.guestName = guest.name
    this.streamingProgram = guest.abi.kind === 'wasi-command' && options.wasi?.mode !== 'record'
    // A replay re-emits output the instance would count again: the stream's total is the
    // executor's to hold (what reaches it is only the output of jobs that succeeded).
    const innerOptions = { ...options, limits: { ...options.limits, maxOutput: Infinity } }
    this.inner = factory(guest, { output: this.onOutput, done: this.onDone, failed: this.onFailed, stderr: hooks.stderr, guestLog: this.onLog }, innerOptions)
  }

  override start(callback: RunnerCallback, restore?: GuestState): void {
    if (this.streamingProgram) {
      callback(errors.invalidOption(`recoveryStrategy ${JSON.stringify(this.options.strategy)} cannot restart ${this.guestName} mid-stream: a WASI program in stream mode is one run over the whole input. Use 'fail', or wasi: { mode: 'record' }`))
      return
    }
    this.base = restore
    const started = (err?: Error | null): void => {
      if (err && !this.destroyed && this.mayStartAgain(err)) {
        log('the thread died while %s started (attempt %d): %s', this.guestName, this.attempts, err.message)
        this.inner.restart(started, this.base)
        return
      }
      callback(err)
    }
    this.inner.start(started, restore)
  }

  /**
   * A thread that dies while the guest starts (killed, out of memory) is the same accident as one
   * that dies on a chunk, and spends the same budget. Any other start failure (a trap in `init`,
   * a module the worker refuses) would only happen again.
   */
  private mayStartAgain(err: Error): boolean {
    return (err as WasmSandboxError).code === 'ERR_WASM_WORKER_DIED' && ++this.attempts <= this.retries()
  }

  /** Tries after the first for one failure: 'skip' gets one, as for an instance lost between jobs. */
  private retries(): number {
    const strategy = this.options.strategy
    return strategy === 'skip' ? 1 : strategy.retry
  }

  override process(job: Job, callback: RunnerCallback): void {
    if (this.recovering || (job.input && !this.options.stateless && this.replayLog.length >= REPLAY_LOG_JOBS)) {
      this.waiting = { job, callback }
      if (!this.recovering && this.pending.length === 0) this.rebase()
      return
    }
    this.pending.push(job)
    this.accepting = callback
    this.inner.process(job, this.onAccepted)
  }

  /** The caller's callback for the job being handed over; a dead worker never answers it. */
  private accepting: RunnerCallback | undefined

  private readonly onAccepted = (): void => {
    const callback = this.accepting
    this.accepting = undefined
    callback?.(null)
  }

  /** Captures the guest at an idle point; it becomes the base recovery restarts from. */
  override snapshot(callback: (err: Error | null, state?: GuestState) => void): void {
    if (this.recovering || this.replaying > 0) {
      // The caller saw its jobs settle, but the new instance is still catching up.
      this.deferredSnapshot = callback
      return
    }
    this.inner.snapshot((err, state) => {
      if (!err) {
        this.base = state
        this.replayLog = []
      }
      callback(err, state)
    })
  }

  override resume(): void {
    this.paused = false
    this.inner.resume()
  }

  override restart(callback: RunnerCallback, restore?: GuestState): void {
    this.generation++
    this.pending = []
    this.held.length = 0
    this.replayLog = []
    this.base = restore
    this.recovering = false
    this.replaying = 0
    this.inner.restart(callback, restore)
  }

  override destroy(): void {
    this.destroyed = true
    this.generation++
    this.pending = []
    this.held.length = 0
    this.replayLog = []
    this.waiting = this.accepting = this.deferredSnapshot = undefined
    this.inner.destroy()
  }

  /** A replayed job's log messages were delivered the first time it ran. */
  private readonly onLog = (entry: GuestLogEntry): void => {
    if (this.replaying === 0) this.hooks.guestLog?.(entry)
  }

  private readonly onOutput = (job: Job, chunk: Buffer): boolean => {
    // Before any job, from the first start's init: nobody's job to hold it for; it goes as it is.
    if (this.pending.length === 0 && !this.recovering && this.replaying === 0 && !this.waiting) return this.hooks.output(job, chunk)
    this.held.push(chunk)
    return !this.paused
  }

  private readonly onDone = (job: Job): void => {
    const held = this.held
    if (this.replaying > 0) {
      // A replayed job: its output was delivered before the failure.
      this.replaying--
      held.length = 0
      this.replayLog.push(job)
      this.settled()
      return
    }
    this.pending.shift()
    this.attempts = 0
    if (!this.options.stateless && job.input) this.replayLog.push(job)
    for (let i = 0; i < held.length; i++) {
      if (!this.hooks.output(job, held[i]!)) this.paused = true
    }
    held.length = 0
    if (this.destroyed) return
    this.hooks.done(job)
    if (this.pending.length === 0 && this.waiting && !this.recovering) this.rebase()
  }

  /** The replay log is full and the runner idle: snapshot, then let the waiting job through. */
  private rebase(): void {
    const generation = this.generation
    this.snapshot((err) => {
      if (this.destroyed || generation !== this.generation) return
      if (err) {
        this.hooks.failed(this.waiting?.job, err as WasmSandboxError)
        return
      }
      this.releaseWaiting()
    })
  }

  private releaseWaiting(): void {
    const waiting = this.waiting
    if (!waiting) return
    this.waiting = undefined
    this.process(waiting.job, waiting.callback)
  }

  private readonly onFailed = (job: Job | undefined, err: WasmSandboxError): void => {
    this.held.length = 0
    if (this.destroyed) return
    if (this.replaying > 0) {
      // A replayed job failed this time: the guest is not deterministic, its state is lost.
      this.hooks.failed(job, err)
      return
    }
    const strategy = this.options.strategy
    const retries = this.retries()
    if (!job) {
      // The instance died between jobs (a worker killed while idle): nothing to skip or retry.
      if (++this.attempts > retries) this.hooks.failed(job, err)
      else this.recover(err)
      return
    }
    if (strategy === 'skip') {
      this.pending.shift()
      log('skipping the job at offset %d: %s', job.offset, err.message)
      // Recovering from here on: a job handed over from inside the hook (a pool routes the next
      // chunk to the instance that has just freed a place) must wait for the new instance, not
      // meet the dead one and be skipped as ERR_WASM_NO_INSTANCE.
      if (job.input) this.recovering = true
      this.hooks.skipped?.(job, err)
      // After a skipped end of input nothing remains to run.
      if (this.destroyed || !job.input) return
    } else if (++this.attempts > retries) {
      this.hooks.failed(job, err)
      return
    } else {
      log('retrying the job at offset %d (attempt %d): %s', job.offset, this.attempts + 1, err.message)
    }
    this.recover(err)
  }

  /** A fresh instance at the base state, then the replay. */
  private recover(cause: WasmSandboxError): void {
    this.recovering = true
    const generation = ++this.generation
    // Restart outside the inner runner's call stack: an inline runner reports failures synchronously.
    process.nextTick(() => {
      if (this.destroyed || generation !== this.generation) return
      this.inner.restart((startErr) => {
        if (this.destroyed || generation !== this.generation) return
        if (startErr) {
          log('restart after %s failed: %s', cause.code, startErr.message)
          if (this.mayStartAgain(startErr)) {
            this.recover(startErr as WasmSandboxError)
            return
          }
          this.hooks.failed(this.pending[0], startErr as WasmSandboxError)
          return
        }
        const logged = this.replayLog
        this.replayLog = []
        this.replaying = logged.length
        this.resend(generation, logged.concat(this.pending), 0)
      }, this.base)
    })
  }

  /**
   * Sends the logged jobs again (their output is discarded: it was delivered already), then the
   * jobs the dead instance had not finished, then whatever arrived meanwhile.
   */
  private resend(generation: number, jobs: Job[], i: number): void {
    if (this.destroyed || generation !== this.generation) return
    if (i < jobs.length) {
      this.inner.process(jobs[i]!, () => this.resend(generation, jobs, i + 1))
      return
    }
    this.recovering = false
    this.onAccepted()
    this.settled()
    this.releaseWaiting()
  }

  private deferredSnapshot: ((err: Error | null, state?: GuestState) => void) | undefined

  /** Takes a snapshot asked for during recovery, once the new instance has caught up. */
  private settled(): void {
    const callback = this.deferredSnapshot
    if (!callback || this.recovering || this.replaying > 0) return
    this.deferredSnapshot = undefined
    this.snapshot(callback)
  }

  /** Logged jobs sent to the new instance and not yet done again. */
  private replaying = 0
}
