import type { GuestState } from '../checkpoint/types.js'
import type { WasmSandboxError } from '../errors.js'
import { bufferSink, GuestInstance, type OutputSink } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import type { GuestRunner, RunnerCallback, RunnerHooks, RunnerOptions } from './runner.js'

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
  private guestMs = 0

  constructor(guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions) {
    this.guest = guest
    this.hooks = hooks
    this.options = options
    this.sink = bufferSink((chunk) => hooks.output(chunk))
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

  process(chunk: Buffer, offset: number, callback: RunnerCallback): void {
    const instance = this.instance
    if (!instance) {
      callback(null)
      return
    }
    const started = performance.now()
    try {
      instance.process(chunk, offset)
      this.guestMs += performance.now() - started
    } catch (err) {
      this.instance = undefined
      this.hooks.failed(err as WasmSandboxError)
      callback(null)
      return
    }
    this.hooks.done()
    callback(null)
  }

  flush(offset: number, callback: RunnerCallback): void {
    try {
      this.instance?.flush(offset)
    } catch (err) {
      this.instance = undefined
      callback(err as Error)
      return
    }
    callback(null)
  }

  snapshot(callback: (err: Error | null, state?: GuestState) => void): void {
    let state: GuestState
    try {
      state = this.instance!.snapshot()
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

  restart(callback: RunnerCallback): void {
    this.instance = undefined
    this.start(callback)
  }

  destroy(): void {
    this.instance = undefined
  }
}
