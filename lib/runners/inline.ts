import type { GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import { bufferSink, GuestInstance, type OutputSink } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import type { GuestRunner, Job, RunnerCallback, RunnerHooks, RunnerOptions } from './runner.js'

/**
 * Runs the guest on the calling thread: the cheapest runner, for trusted guests. It gives up
 * the time limit (nothing can interrupt synchronous wasm on this thread, so a guest that loops
 * forever blocks the process) and mid-call backpressure (a chunk's whole output is produced in
 * one call, bounded by `limits.maxOutputPerChunk`).
 */
export class InlineRunner implements GuestRunner {
  private instance: GuestInstance | undefined
  private readonly guest: LoadedGuest
  private readonly hooks: RunnerHooks
  private readonly options: RunnerOptions
  private readonly sink: OutputSink
  /** The job whose call is running: output is about it. */
  private current: Job | undefined
  private guestMs = 0

  constructor(guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions) {
    this.guest = guest
    this.hooks = hooks
    this.options = options
    this.sink = bufferSink((chunk) => hooks.output(this.current!, chunk))
  }

  start(callback: RunnerCallback, restore?: GuestState): void {
    try {
      const instance = new GuestInstance(this.guest, this.sink, this.options.limits)
      if (restore) instance.restore(restore)
      else instance.init()
      instance.reserve(this.options.bufferSize)
      this.instance = instance
    } catch (err) {
      callback(err as Error)
      return
    }
    callback(null)
  }

  process(job: Job, callback: RunnerCallback): void {
    const instance = this.instance
    if (!instance) {
      this.hooks.failed(job, errors.noInstance({ module: this.guest.name, exportName: job.input ? 'process_chunk' : 'flush', offset: job.offset }))
      callback(null)
      return
    }
    const started = performance.now()
    this.current = job
    try {
      if (job.input) instance.process(job.input, job.offset)
      else instance.flush(job.offset)
    } catch (err) {
      this.instance = undefined
      this.current = undefined
      this.hooks.failed(job, err as WasmSandboxError)
      callback(null)
      return
    } finally {
      this.guestMs += performance.now() - started
    }
    this.current = undefined
    this.hooks.done(job)
    callback(null)
  }

  snapshot(callback: (err: Error | null, state?: GuestState) => void): void {
    if (!this.instance) {
      callback(errors.noInstance({ module: this.guest.name, exportName: 'snapshot', offset: 0 }))
      return
    }
    let state: GuestState
    try {
      state = this.instance.snapshot()
    } catch (err) {
      callback(err as Error)
      return
    }
    callback(null, state)
  }

  guestTimeMs(): number {
    return this.guestMs
  }

  resume(): void {}

  restart(callback: RunnerCallback, restore?: GuestState): void {
    this.instance = undefined
    this.start(callback, restore)
  }

  destroy(): void {
    this.instance = undefined
  }
}
