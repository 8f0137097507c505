import type { GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import { bufferSink, droppedEntry, GuestInstance, logEntry, type LogSink, type OutputSink } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import { initWasi } from '../wasi/program.js'
import { reactorWasi } from '../wasi/reactor.js'
import { hasState, type GuestRunner, type Job, type RunnerCallback, type RunnerHooks, type RunnerOptions } from './runner.js'

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
  private wasiReady = false
  /** A reactor's stdout and stderr: diagnostics, copied out for the `stderr` hook. */
  private readonly diagnostics: OutputSink = (memory, start, length) => {
    this.hooks.stderr?.(Buffer.from(memory.subarray(start, start + length)))
  }

  /** `sandbox.log` messages, decoded here for the `log` hook. */
  private readonly logSink: LogSink = {
    message: (level, memory, start, length, cutFrom, site) => this.hooks.guestLog?.(logEntry(level, memory.slice(start, start + length), cutFrom, site)),
    dropped: (messages, site) => this.hooks.guestLog?.(droppedEntry(messages, site)),
  }

  constructor(guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions) {
    this.guest = guest
    this.hooks = hooks
    this.options = options
    this.sink = bufferSink((chunk) => hooks.output(this.current!, chunk))
  }

  start(callback: RunnerCallback, restore?: GuestState): void {
    const abi = this.guest.abi
    if (abi.kind === 'wasi-command') {
      // A command blocks in fd_read until input comes: only a thread of its own can wait.
      callback(errors.invalidOption(`${this.guest.name} is a WASI command: it needs isolation 'worker' (it blocks reading stdin, which would block this thread)`))
      return
    }
    if (abi.wasiImports.length > 0 && !this.wasiReady) {
      initWasi(this.options.wasi).then(
        () => {
          this.wasiReady = true
          this.start(callback, restore)
        },
        (err) => callback(err as Error),
      )
      return
    }
    try {
      const wasi = abi.wasiImports.length > 0 ? reactorWasi(this.guest, this.options.wasi!, this.diagnostics) : undefined
      const instance = new GuestInstance(this.guest, this.sink, this.options.limits, wasi, {
        config: this.options.guestConfig,
        log: this.hooks.guestLog ? this.logSink : undefined,
      })
      if (hasState(restore)) instance.restore(restore)
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
