import type { GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import type { LoadedGuest } from '../guest/load.js'
import type { GuestRunner, Job, RunnerCallback, RunnerFactory, RunnerHooks, RunnerOptions } from './runner.js'

/**
 * `limits.deadline` as the outermost runner: the whole stream, from start to the end of flush,
 * gets `deadline` ms. When it passes, the guest is dropped and the failure is final (recovery,
 * inside this runner, never sees it).
 */
export class DeadlineRunner implements GuestRunner {
  private readonly inner: GuestRunner
  private readonly hooks: RunnerHooks
  private readonly guestName: string
  private readonly deadline: number
  private timer: NodeJS.Timeout | undefined
  /** Jobs handed over and not done: the oldest is where the time ran out. */
  private readonly pending: Job[] = []
  private lastOffset = 0

  constructor(factory: RunnerFactory, guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions, deadline: number) {
    this.hooks = hooks
    this.guestName = guest.name
    this.deadline = deadline
    this.inner = factory(guest, { ...hooks, done: this.onDone, skipped: this.onSkipped, failed: this.onFailed }, options)
  }

  start(callback: RunnerCallback, restore?: GuestState): void {
    if (!this.timer) {
      this.timer = setTimeout(this.expire, this.deadline)
      // The stream's own work keeps the process alive; an idle stream must not.
      this.timer.unref()
    }
    this.inner.start(callback, restore)
  }

  process(job: Job, callback: RunnerCallback): void {
    this.pending.push(job)
    this.lastOffset = job.offset
    this.inner.process(job, callback)
  }

  snapshot(callback: (err: Error | null, state?: GuestState) => void): void {
    this.inner.snapshot(callback)
  }

  guestTimeMs(): number {
    return this.inner.guestTimeMs()
  }

  resume(): void {
    this.inner.resume()
  }

  restart(callback: RunnerCallback, restore?: GuestState): void {
    this.pending.length = 0
    this.inner.restart(callback, restore)
  }

  destroy(): void {
    this.clear()
    this.pending.length = 0
    this.inner.destroy()
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
  }

  private readonly expire = (): void => {
    this.timer = undefined
    const job = this.pending[0]
    const exportName = !job ? 'process_chunk' : job.input ? 'process_chunk' : 'flush'
    const site = { module: this.guestName, exportName, offset: job?.offset ?? this.lastOffset }
    this.inner.destroy()
    this.pending.length = 0
    this.hooks.failed(job, errors.timeout(site, this.deadline, 'deadline'))
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
