import type { GuestState } from '../checkpoint/types.js'
import type { ConcurrencyReport, GuestRunner, Job, RunnerCallback } from './runner.js'

/**
 * A runner around a runner that hands everything on unless it has a reason not to: recovery,
 * checkpoint cuts and the deadline override only what they change.
 */
export abstract class WrappingRunner implements GuestRunner {
  protected abstract readonly inner: GuestRunner

  start(callback: RunnerCallback, restore?: GuestState): void {
    this.inner.start(callback, restore)
  }

  process(job: Job, callback: RunnerCallback): void {
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
    this.inner.restart(callback, restore)
  }

  destroy(): void {
    this.inner.destroy()
  }

  close(callback: RunnerCallback): void {
    closeRunner(this.inner, callback)
  }

  concurrency(): ConcurrencyReport | undefined {
    return this.inner.concurrency?.()
  }
}

/** Ends `runner` without its flush where it can (`close`), else destroys it. */
export function closeRunner(runner: GuestRunner, callback: RunnerCallback): void {
  if (runner.close) {
    runner.close(callback)
    return
  }
  runner.destroy()
  callback(null)
}
