import type { GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import type { LoadedGuest } from '../guest/load.js'
import { logger } from '../log.js'
import { WrappingRunner } from './wrapping.js'
import type { GuestRunner, Job, RunnerCallback, RunnerFactory, RunnerHooks, RunnerOptions } from './runner.js'

const log = logger('snapshot')

export interface SnapshotSchedule {
  /** Milliseconds between cuts. */
  interval?: number | undefined
  /** Input bytes between cuts. */
  every?: number | undefined
  /** Offsets the stream starts from (a resumed stream counts on from its checkpoint). */
  inputOffset: number
  outputOffset: number
}

/**
 * Checkpoint cuts as a runner around a runner. When a cut is due before a job, the job waits
 * until every job before it is done (all their output delivered), the guest's state is captured
 * and reported through `hooks.snapshot` with the offsets of that point, and only then is the job
 * handed on. A cut is consistent because nothing is in flight while it is taken.
 */
export class SnapshottingRunner extends WrappingRunner {
  protected readonly inner: GuestRunner
  private readonly hooks: RunnerHooks
  private readonly guest: LoadedGuest
  private readonly wasiMode: string | undefined
  private readonly interval: number | undefined
  private readonly every: number | undefined
  private outputOffset: number
  private lastInput: number
  private lastAt = Date.now()
  private inFlight = 0
  /** The job a due cut holds back, with the caller's callback. */
  private waiting: { job: Job; callback: RunnerCallback } | undefined
  private cutting = false
  private destroyed = false

  constructor(factory: RunnerFactory, guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions, schedule: SnapshotSchedule) {
    super()
    this.hooks = hooks
    this.guest = guest
    this.wasiMode = options.wasi?.mode
    this.interval = schedule.interval
    this.every = schedule.every
    this.outputOffset = schedule.outputOffset
    this.lastInput = schedule.inputOffset
    this.inner = factory(guest, { ...hooks, output: this.onOutput, done: this.onDone, skipped: this.onSkipped, failed: this.onFailed }, options)
  }

  override start(callback: RunnerCallback, restore?: GuestState): void {
    if (!this.guest.hash) {
      callback(errors.checkpointUnsupported(this.guest.name, 'a precompiled WebAssembly.Module has no content hash to check a resume against'))
      return
    }
    if (this.guest.abi.kind === 'wasi-command' && this.wasiMode !== 'record') {
      callback(errors.checkpointUnsupported(this.guest.name, "a WASI program in stream mode is one run of _start over the whole input, and a run cannot be captured in the middle (use wasi: { mode: 'record' } for checkpoints)"))
      return
    }
    this.inner.start(callback, restore)
  }

  override process(job: Job, callback: RunnerCallback): void {
    if (job.input && this.due(job.offset)) {
      this.waiting = { job, callback }
      if (this.inFlight === 0) this.cut()
      return
    }
    this.inFlight++
    this.inner.process(job, callback)
  }

  override restart(callback: RunnerCallback, restore?: GuestState): void {
    this.inFlight = 0
    this.waiting = undefined
    this.inner.restart(callback, restore)
  }

  override destroy(): void {
    this.destroyed = true
    this.waiting = undefined
    this.inner.destroy()
  }

  private due(offset: number): boolean {
    if (offset === this.lastInput) return false
    return (
      (this.every !== undefined && offset - this.lastInput >= this.every) ||
      (this.interval !== undefined && Date.now() - this.lastAt >= this.interval)
    )
  }

  private cut(): void {
    const waiting = this.waiting!
    this.cutting = true
    this.inner.snapshot((err, state) => {
      this.cutting = false
      if (this.destroyed) return
      if (err) {
        this.hooks.failed(waiting.job, err as WasmSandboxError)
        return
      }
      const inputOffset = waiting.job.offset
      this.lastAt = Date.now()
      this.lastInput = inputOffset
      log('cut at input %d, output %d (%d bytes of memory)', inputOffset, this.outputOffset, state!.memory.length)
      this.hooks.snapshot?.({ inputOffset, outputOffset: this.outputOffset, moduleHash: this.guest.hash!, state: state! })
      // Yield one event-loop turn per cut: a source that never waits on I/O would otherwise run
      // the whole stream in microtasks, and the checkpoint saves (zlib, fsync) would never finish.
      setImmediate(this.release)
    })
  }

  private readonly release = (): void => {
    const waiting = this.waiting
    if (!waiting || this.destroyed) return
    this.waiting = undefined
    this.inFlight++
    this.inner.process(waiting.job, waiting.callback)
  }

  private readonly onOutput = (job: Job, chunk: Buffer): boolean => {
    this.outputOffset += chunk.length
    return this.hooks.output(job, chunk)
  }

  private readonly onDone = (job: Job): void => {
    this.inFlight--
    this.hooks.done(job)
    if (this.inFlight === 0 && this.waiting && !this.cutting && !this.destroyed) this.cut()
  }

  private readonly onSkipped = (job: Job, err: WasmSandboxError): void => {
    this.inFlight--
    this.hooks.skipped?.(job, err)
    if (this.inFlight === 0 && this.waiting && !this.cutting && !this.destroyed) this.cut()
  }

  private readonly onFailed = (job: Job | undefined, err: WasmSandboxError): void => {
    this.inFlight = 0
    this.hooks.failed(job, err)
  }
}
