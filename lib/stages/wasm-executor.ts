import type { TransformCallback } from 'node:stream'
import { Transform } from 'readable-stream'
import type { Checkpoint, GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import { isLoadedGuest, loadGuest, type LoadedGuest, type ModuleSource } from '../guest/load.js'
import { logger } from '../log.js'
import { DEFAULT_LIMITS, DEFAULT_BUFFER_SIZE, type Isolation, type Limits, type RecoveryStrategy } from '../options.js'
import type { GuestRunner, RunnerFactory, RunnerHooks } from '../runners/runner.js'
import { runnerFor } from '../runners/select.js'
import { offsetOf } from './offset.js'

const log = logger('executor')

export interface WasmExecutorOptions {
  /** Input region the guest allocates up front. Default 64 KiB. */
  bufferSize?: number
  /** Bytes buffered on each side before backpressure applies. Default bufferSize. */
  highWaterMark?: number
  /** Where the guest runs. Default `'worker'`. */
  isolation?: Isolation
  /** Memory, time and output limits. Defaults: see `DEFAULT_LIMITS`. */
  limits?: Partial<Limits>
  /** What a failed chunk does to the stream. Default `'fail'`. */
  recoveryStrategy?: RecoveryStrategy
  /** Chunks queued to a worker at once. Default 2. */
  maxInFlight?: number
  /** Runs the guest some other way (overrides `isolation`). */
  runner?: RunnerFactory
  /**
   * Take a snapshot (a consistent cut with the guest's state, emitted as `'snapshot'`) every
   * `interval` ms and/or every `every` input bytes, between chunks. Off by default.
   */
  snapshots?: { interval?: number | undefined; every?: number | undefined }
  /** Continue a stream from this checkpoint: its guest state and offsets. */
  resumeFrom?: Checkpoint
}

/** What the executor emits as `'snapshot'`: the CheckpointTap turns it into a checkpoint. */
export interface Snapshot {
  inputOffset: number
  outputOffset: number
  moduleHash: string
  state: GuestState
}

/**
 * Runs a guest over every chunk: one compile (cached), one instance for the stream,
 * `process_chunk` per chunk, `flush` at the end, through a GuestRunner (inline or worker).
 *
 * Output is pushed in order. Outputs that do not fit the readable side wait in a queue, and
 * the write callback with them, until `_read` asks for more: a guest may emit a chunk's whole
 * output at once, and Transform alone lets several chunks' outputs pile up (measured).
 *
 * With `recoveryStrategy` 'skip' or { retry }, a chunk's output is released only once the chunk
 * succeeded, so a failed chunk contributes nothing and a retried one appears once.
 */
export class WasmExecutor extends Transform {
  /** Input offset just past the last chunk received. */
  bytesIn = 0
  /** Output bytes delivered so far. */
  bytesOut = 0
  /** Bytes waiting in the output queue. */
  queuedBytes = 0
  /** Chunks dropped by `recoveryStrategy: 'skip'`. */
  chunksSkipped = 0
  /** Chunks handed to the guest. */
  chunks = 0
  /** Times the consumer was full, so the guest's output had to wait. */
  backpressureWaits = 0

  private runner: GuestRunner | undefined
  private readonly source: ModuleSource | LoadedGuest
  private readonly bufferSize: number
  private readonly limits: Limits
  private readonly recovery: RecoveryStrategy
  private readonly maxInFlight: number
  private readonly runnerFactory: RunnerFactory
  private readonly hooks: RunnerHooks

  private readonly queue: Buffer[] = []
  private queueHead = 0
  private canPush = true
  private heldCallback: TransformCallback | null = null
  private chunkCallback: TransformCallback | null = null
  private flushCallback: TransformCallback | null = null

  /** Chunks handed to the runner and not yet done, kept for a retry or a restart. */
  private readonly inflight: Buffer[] = []
  private readonly inflightOffsets: number[] = []
  /** Output of the oldest in-flight chunk, held until it is done (skip/retry only). */
  private readonly held: Buffer[] = []
  private attempts = 0
  private restarting = false
  private flushed = false
  private generation = 0
  private deadline: NodeJS.Timeout | undefined
  private guestName = '<module>'
  private lastGuestMs = 0
  private moduleHash: string | undefined
  private readonly snapshotInterval: number | undefined
  private readonly snapshotEvery: number | undefined
  private readonly resumeFrom: Checkpoint | undefined
  private lastSnapshotAt = Date.now()
  private lastSnapshotInput = 0
  /** A chunk held back until the snapshot due before it has been taken. */
  private waitingChunk: Buffer | undefined
  private waitingOffset = 0
  private snapshotting = false

  constructor(module: ModuleSource | LoadedGuest, options: WasmExecutorOptions = {}) {
    const bufferSize = options.bufferSize ?? DEFAULT_BUFFER_SIZE
    const hwm = options.highWaterMark ?? bufferSize
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm })
    this.source = module
    this.bufferSize = bufferSize
    this.limits = { ...DEFAULT_LIMITS, ...options.limits }
    this.recovery = options.recoveryStrategy ?? 'fail'
    this.maxInFlight = options.maxInFlight ?? 2
    this.runnerFactory = options.runner ?? runnerFor(options.isolation ?? 'worker')
    this.snapshotInterval = options.snapshots?.interval
    this.snapshotEvery = options.snapshots?.every
    this.resumeFrom = options.resumeFrom
    if (this.resumeFrom) {
      this.bytesIn = this.lastSnapshotInput = this.resumeFrom.inputOffset
      this.bytesOut = this.resumeFrom.outputOffset
    }
    this.hooks = { output: this.acceptOutput, done: this.onChunkDone, failed: this.onChunkFailed }
  }

  _construct(callback: (err?: Error | null) => void): void {
    const loading = isLoadedGuest(this.source)
      ? Promise.resolve(this.source)
      : loadGuest(this.source, { memoryLimit: this.limits.memory })
    // Leave the promise chain before calling back, so a throwing listener is not a rejection.
    loading.then(
      (guest) => process.nextTick(() => this.startRunner(guest, callback)),
      (err) => process.nextTick(callback, err),
    )
  }

  private startRunner(guest: LoadedGuest, callback: (err?: Error | null) => void): void {
    if (this.destroyed) {
      callback()
      return
    }
    log('starting %s', guest.name)
    this.guestName = guest.name
    this.moduleHash = guest.hash
    const resume = this.resumeFrom
    if (resume && resume.moduleHash !== guest.hash) {
      callback(errors.checkpointMismatch(guest.name, `the checkpoint was taken with another module (sha256 ${resume.moduleHash.slice(0, 12)}…, this one is ${String(guest.hash).slice(0, 12)}…)`))
      return
    }
    if ((this.snapshotInterval !== undefined || this.snapshotEvery !== undefined) && !guest.hash) {
      callback(errors.checkpointUnsupported(guest.name, 'a precompiled WebAssembly.Module has no content hash to check a resume against'))
      return
    }
    const limits = this.limits
    this.runner = this.runnerFactory(guest, this.hooks, {
      bufferSize: this.bufferSize,
      limits: { maxOutputPerChunk: limits.maxOutputPerChunk, maxOutput: limits.maxOutput, memory: limits.memory },
      timeout: limits.timeout,
      maxInFlight: this.maxInFlight,
    })
    if (limits.deadline !== undefined) {
      const site = { module: guest.name, exportName: 'process_chunk', offset: 0 }
      this.deadline = setTimeout(() => {
        site.offset = this.inflightOffsets[0] ?? this.bytesIn
        this.destroy(errors.timeout(site, limits.deadline!, 'deadline'))
      }, limits.deadline)
      this.deadline.unref()
    }
    this.runner.start(callback, resume?.guest)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const offset = offsetOf(chunk) ?? this.bytesIn
    this.bytesIn = offset + chunk.length
    this.chunkCallback = callback
    if (this.snapshotDue(offset)) {
      this.waitingChunk = chunk
      this.waitingOffset = offset
      if (this.inflight.length === 0) this.takeSnapshot()
      return
    }
    this.send(chunk, offset)
  }

  private send(chunk: Buffer, offset: number): void {
    this.chunks++
    this.inflight.push(chunk)
    this.inflightOffsets.push(offset)
    if (!this.restarting) this.runner!.process(chunk, offset, this.onProcessed)
  }

  private snapshotDue(offset: number): boolean {
    const interval = this.snapshotInterval
    const every = this.snapshotEvery
    if (interval === undefined && every === undefined) return false
    if (offset === this.lastSnapshotInput) return false
    return (
      (every !== undefined && offset - this.lastSnapshotInput >= every) ||
      (interval !== undefined && Date.now() - this.lastSnapshotAt >= interval)
    )
  }

  /** A consistent cut: every chunk before it is done and its output delivered. */
  private takeSnapshot(): void {
    this.snapshotting = true
    const inputOffset = this.waitingOffset
    this.runner!.snapshot((err, state) => {
      this.snapshotting = false
      if (this.destroyed) return
      if (err) {
        this.destroy(err)
        return
      }
      this.lastSnapshotAt = Date.now()
      this.lastSnapshotInput = inputOffset
      const snapshot: Snapshot = { inputOffset, outputOffset: this.bytesOut, moduleHash: this.moduleHash!, state: state! }
      log('snapshot at input %d, output %d (%d bytes of memory)', inputOffset, this.bytesOut, state!.memory.length)
      this.emit('snapshot', snapshot)
      // Yield one event-loop turn per cut: a source that never waits on I/O would otherwise run
      // the whole stream in microtasks, and the checkpoint saves (zlib, fsync) would never finish.
      setImmediate(this.sendWaiting)
    })
  }

  private readonly sendWaiting = (): void => {
    const chunk = this.waitingChunk
    if (!chunk || this.destroyed) return
    this.waitingChunk = undefined
    this.send(chunk, this.waitingOffset)
  }

  /** The runner accepted the chunk: take the next one, unless output is backed up. */
  private readonly onProcessed = (): void => {
    const callback = this.chunkCallback
    if (!callback) return
    this.chunkCallback = null
    if (this.queueHead === this.queue.length) callback()
    else this.heldCallback = callback
  }

  /** Milliseconds spent inside guest calls. */
  guestTimeMs(): number {
    return this.runner?.guestTimeMs() ?? this.lastGuestMs
  }

  override _flush(callback: TransformCallback): void {
    this.flushCallback = callback
    if (!this.restarting) this.runner!.flush(this.bytesIn, this.onFlushed)
  }

  private readonly onFlushed = (err?: Error | null): void => {
    if (err) {
      this.destroy(err)
      return
    }
    log('done: %d bytes in, %d bytes out', this.bytesIn, this.bytesOut)
    this.clearDeadline()
    this.runner?.destroy()
    this.flushed = true
    // Trailing output the guest's flush queued goes out before EOF.
    if (this.queueHead === this.queue.length) this.finishFlush()
  }

  private finishFlush(): void {
    const callback = this.flushCallback
    this.flushCallback = null
    callback?.()
  }

  override _read(size: number): void {
    this.canPush = true
    if (this.queueHead < this.queue.length && !this.drainQueue()) return
    const held = this.heldCallback
    if (held) {
      this.heldCallback = null
      held()
    }
    super._read(size)
    this.runner?.resume()
  }

  /** Pushes queued outputs while the readable side takes them; true once the queue is empty. */
  private drainQueue(): boolean {
    const queue = this.queue
    while (this.queueHead < queue.length) {
      const chunk = queue[this.queueHead]!
      queue[this.queueHead++] = undefined as never
      this.queuedBytes -= chunk.length
      if (!this.push(chunk)) {
        this.canPush = false
        break
      }
    }
    if (this.queueHead < queue.length) return false
    queue.length = 0
    this.queueHead = 0
    if (this.flushed) this.finishFlush()
    return true
  }

  private deliver(chunk: Buffer): boolean {
    this.bytesOut += chunk.length
    // The instance stops a bomb inside the call; this holds the total across restarts too.
    if (this.bytesOut > this.limits.maxOutput) {
      const site = { module: String(this.guestName), exportName: 'process_chunk', offset: this.inflightOffsets[0] ?? this.bytesIn }
      this.destroy(errors.outputLimit(site, this.limits.maxOutput, 'maxOutput'))
      return false
    }
    if (this.canPush && this.queueHead === this.queue.length) {
      this.canPush = this.push(chunk)
      if (!this.canPush) this.backpressureWaits++
      return this.canPush
    }
    this.queue.push(chunk)
    this.queuedBytes += chunk.length
    return false
  }

  private readonly acceptOutput = (chunk: Buffer): boolean => {
    if (this.recovery === 'fail') return this.deliver(chunk)
    this.held.push(chunk)
    return true
  }

  private readonly onChunkDone = (): void => {
    // Held output first, while the chunk it belongs to is still the oldest in flight.
    if (this.held.length > 0) {
      for (const chunk of this.held) this.deliver(chunk)
      this.held.length = 0
      if (this.destroyed) return
    }
    this.inflight.shift()
    this.inflightOffsets.shift()
    this.attempts = 0
    if (this.waitingChunk && this.inflight.length === 0 && !this.snapshotting) this.takeSnapshot()
  }

  private readonly onChunkFailed = (err: WasmSandboxError): void => {
    if (this.destroyed) return
    const recovery = this.recovery
    this.held.length = 0
    if (recovery === 'fail') {
      this.destroy(err)
      return
    }
    if (recovery === 'skip') {
      this.inflight.shift()
      this.inflightOffsets.shift()
      this.chunksSkipped++
      log('skipping chunk at offset %d: %s', err.offset, err.message)
      this.emit('chunk-error', err)
    } else if (++this.attempts > recovery.retry) {
      this.destroy(err)
      return
    } else {
      log('retrying chunk at offset %d (attempt %d): %s', err.offset, this.attempts + 1, err.message)
    }
    this.restarting = true
    const generation = ++this.generation
    // Restart outside the runner's own call stack: an inline runner reports failures synchronously.
    process.nextTick(() => {
      if (this.destroyed || generation !== this.generation) return
      this.runner!.restart((startErr) => {
        if (startErr) this.destroy(startErr)
        else this.resend(generation, this.inflight.slice(), this.inflightOffsets.slice(), 0)
      })
    })
  }

  /** Replays the chunks the dead instance had not finished, then carries on. */
  private resend(generation: number, chunks: Buffer[], offsets: number[], i: number): void {
    if (this.destroyed || generation !== this.generation) return
    if (i === chunks.length) {
      this.restarting = false
      if (this.chunkCallback) this.onProcessed()
      if (this.flushCallback) this.runner!.flush(this.bytesIn, this.onFlushed)
      return
    }
    this.runner!.process(chunks[i]!, offsets[i]!, () => this.resend(generation, chunks, offsets, i + 1))
  }

  private clearDeadline(): void {
    if (this.deadline) clearTimeout(this.deadline)
    this.deadline = undefined
  }

  override _destroy(err: Error | null, callback: (error: Error | null) => void): void {
    if (err) log('destroyed: %s', err.message)
    this.clearDeadline()
    this.lastGuestMs = this.guestTimeMs()
    this.runner?.destroy()
    this.runner = undefined
    this.generation++
    this.queue.length = 0
    this.queueHead = this.queuedBytes = 0
    this.inflight.length = this.inflightOffsets.length = this.held.length = 0
    this.waitingChunk = undefined
    this.heldCallback = this.chunkCallback = this.flushCallback = null
    callback(err)
  }
}
