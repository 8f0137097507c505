import type { GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import type { LoadedGuest } from '../guest/load.js'
import { WrappingRunner } from './wrapping.js'
import type { GuestRunner, Job, RunnerCallback, RunnerFactory, RunnerHooks, RunnerOptions } from './runner.js'

/**
 * `limits.deadline` as the outermost runner: the whole stream, from start to the end of flush,
 * gets `deadline` ms. When it passes, the guest is dropped and the failure is final (recovery,
 * inside this runner, never sees it).
 */
export class DeadlineRunner extends WrappingRunner {
  protected readonly inner: GuestRunner
  private readonly hooks: RunnerHooks
  private readonly guestName: string
  private readonly deadline: number
  private timer: NodeJS.Timeout | undefined
  /** When the deadline passes, for the check per job: see `process`. */
  private endsAt = Infinity
  /** An expiry found by that check, waiting for its tick; a finished stream withdraws it. */
  private expiring = false
  /** Jobs handed over and not done: the oldest is where the time ran out. */
  private readonly pending: Job[] = []
  private lastOffset = 0
  private started = false
  private startCallback: RunnerCallback | undefined

  constructor(factory: RunnerFactory, guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions, deadline: number) {
    super()
    this.hooks = hooks
    this.guestName = guest.name
    this.deadline = deadline
    this.inner = factory(guest, { ...hooks, done: this.onDone, skipped: this.onSkipped, failed: this.onFailed }, options)
  }

  override start(callback: RunnerCallback, restore?: GuestState): void {
    if (!this.timer) {
      this.endsAt = performance.now() + this.deadline
      this.timer = setTimeout(this.expire, this.deadline)
      // The stream's own work keeps the process alive; an idle stream must not.
      this.timer.unref()
    }
    this.startCallback = callback
    this.inner.start((err) => {
      const waiting = this.startCallback
      this.startCallback = undefined
      this.started = !err
      waiting?.(err)
    }, restore)
  }

  /**
   * Checks the clock as well as the timer: an inline guest fed by an in-memory source and read by
   * a sink that calls back at once runs the whole stream in ticks and microtasks, and the timer
   * never gets its turn. Past the deadline the job is not run: the expiry fails the stream at
   * the next tick (not inside this call), with this job's offset if none before it is pending.
   */
  override process(job: Job, callback: RunnerCallback): void {
    this.pending.push(job)
    this.lastOffset = job.offset
    if (this.timer && performance.now() >= this.endsAt) {
      this.clear()
      this.expiring = true
      process.nextTick(() => {
        if (this.expiring) this.expire()
      })
      return
    }
    this.inner.process(job, callback)
  }

  override restart(callback: RunnerCallback, restore?: GuestState): void {
    this.pending.length = 0
    this.inner.restart(callback, restore)
  }

  override destroy(): void {
    this.clear()
    this.pending.length = 0
    this.inner.destroy()
  }

  /** An instance that is closed, not destroyed, is as much over: its deadline with it. */
  override close(callback: RunnerCallback): void {
    this.clear()
    this.pending.length = 0
    super.close(callback)
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    this.expiring = false
  }

  private readonly expire = (): void => {
    this.timer = undefined
    this.expiring = false
    const job = this.pending[0]
    const exportName = !job ? 'process_chunk' : job.input ? 'process_chunk' : 'flush'
    const site = { module: this.guestName, exportName: this.started ? exportName : 'start', offset: job?.offset ?? this.lastOffset }
    const err = errors.timeout(site, this.deadline, 'deadline')
    this.pending.length = 0
    const starting = this.startCallback
    this.startCallback = undefined
    this.inner.destroy()
    // Still starting: the start itself fails with the deadline (the stream waits on it).
    if (starting) starting(err)
    else this.hooks.failed(job, err)
  }

  private readonly onDone = (job: Job): void => {
    this.pending.shift()
    if (!job.input) this.clear()
    this.hooks.done(job)
  }

  private readonly onSkipped = (job: Job, err: WasmSandboxError): void => {
    this.pending.shift()
    if (!job.input) this.clear()
    this.hooks.skipped?.(job, err)
  }

  private readonly onFailed = (job: Job | undefined, err: WasmSandboxError): void => {
    this.pending.length = 0
    this.clear()
    this.hooks.failed(job, err)
  }
}
