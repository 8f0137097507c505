import type { TransformCallback } from 'node:stream'
import { Transform } from 'readable-stream'
import type { Checkpoint } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import type { GuestLogEntry } from '../guest/instance.js'
import { isLoadedGuest, type LoadedGuest, type ModuleSource } from '../guest/load.js'
import { loadGuest } from '../runners/guest-loader.js'
import { logger } from '../log.js'
import { DEFAULT_LIMITS, DEFAULT_BUFFER_SIZE, defaultHighWaterMark, defaultMaxInFlight, resolveGuestConfig, type Isolation, type Limits, type RecoveryStrategy } from '../options.js'
import { runnerChain } from '../runners/chain.js'
import type { WorkerPool } from '../runners/worker-pool.js'
import { endOfInput, type ConcurrencyReport, type GuestRunner, type Job, type RunnerFactory, type RunnerHooks, type Snapshot } from '../runners/runner.js'
import { emitSafely } from './emit-safely.js'
import { resolveWasi, wasiConfig, type ResolvedWasi, type WasiOptions } from '../wasi/options.js'
import { offsetOf } from './offset.js'

export type { Snapshot } from '../runners/runner.js'

const log = logger('executor')
/** What guests log through `sandbox.log`: `DEBUG=wasm-sandbox:guest`. */
const guestLog = logger('guest')

export interface WasmExecutorOptions {
  /** Input region the guest allocates up front: the largest chunk. Default 64 KiB. */
  bufferSize?: number
  /** The chunk size the stream starts with when chunks may grow to bufferSize. Default bufferSize. */
  chunkSize?: number
  /** Bytes buffered on each side before backpressure applies. Default max(bufferSize, 256 KiB). */
  highWaterMark?: number
  /** Where the guest runs. Default `'worker'`. */
  isolation?: Isolation
  /** Memory, time and output limits. Defaults: see `DEFAULT_LIMITS`. */
  limits?: Partial<Limits>
  /** What a failed chunk does to the stream. Default `'fail'`. */
  recoveryStrategy?: RecoveryStrategy
  /** With recovery, the guest keeps no state between chunks: restart it from `init`. Default false. */
  stateless?: boolean
  /** Chunks queued to a worker at once. Default: enough for 1 MiB, 2 to 64 (`defaultMaxInFlight`). */
  maxInFlight?: number
  /**
   * The complete runner chain (see `runnerChain`). Default: built from `isolation`,
   * `recoveryStrategy`, `stateless`, `limits.deadline` and `snapshots`.
   */
  runner?: RunnerFactory
  /**
   * Take a snapshot (a consistent cut with the guest's state, emitted as `'snapshot'`) every
   * `interval` ms and/or every `every` input bytes, between chunks. Off by default.
   */
  snapshots?: { interval?: number | undefined; every?: number | undefined }
  /** Continue a stream from this checkpoint: its guest state and offsets. */
  resumeFrom?: Checkpoint
  /** What a WASI program (or a wasi-libc guest) may see. Default: nothing granted. */
  wasi?: WasiOptions | ResolvedWasi
  /** Bytes the guest reads with `sandbox.config_read` (ABI v1.1). A string is UTF-8. */
  guestConfig?: Uint8Array | string | undefined
  /** Where a worker runner gets its thread (a sandbox's pool). Default: the shared pool. */
  workers?: WorkerPool
}

/**
 * The stream side of running a guest: hands each chunk to a runner as a job, pushes the output
 * in order, holds what the consumer has no room for, and counts. Where the guest runs and what
 * wraps it (recovery, checkpoint cuts, the deadline) is the runner chain's business.
 *
 * Output that does not fit the readable side waits in a queue, and the write callback with it,
 * until `_read` asks for more: a guest may emit a chunk's whole output at once, and Transform
 * alone lets several chunks' outputs pile up (measured).
 */
export class WasmExecutor extends Transform {
  /** Input offset just past the last chunk received. */
  bytesIn = 0
  /** Input offset just past the last chunk the guest finished (or skipped): bytesIn less what is in flight. */
  bytesProcessed = 0
  /** Output bytes delivered so far. */
  bytesOut = 0
  /** Bytes waiting in the output queue. */
  queuedBytes = 0
  /** Chunks dropped by `recoveryStrategy: 'skip'`. */
  chunksSkipped = 0
  /** Chunks handed to the guest. */
  chunks = 0
  /** Times output was ready but the consumer was full, so it waited (once per wait). */
  backpressureWaits = 0

  private runner: GuestRunner | undefined
  private readonly source: ModuleSource | LoadedGuest
  private readonly bufferSize: number
  private readonly limits: Limits
  private readonly chunkSize: number
  private readonly maxInFlight: number
  private readonly runnerFactory: RunnerFactory
  private readonly resumeFrom: Checkpoint | undefined
  private readonly hooks: RunnerHooks
  private readonly wasi: ResolvedWasi
  private readonly guestConfig: Uint8Array | undefined
  private readonly workers: WorkerPool | undefined

  private readonly queue: Buffer[] = []
  private queueHead = 0
  private canPush = true
  /** The caller's `wasi.stderr` is full: the runner holds the guest's frames until it drains. */
  private stderrFull = false
  /** Output is queued for the consumer since the last `_read`. */
  private waiting = false
  private waitCheckArmed = false
  private heldCallback: TransformCallback | null = null
  private chunkCallback: TransformCallback | null = null
  private flushCallback: TransformCallback | null = null
  private flushed = false
  private guestName = '<module>'
  private lastGuestMs = 0
  private starting = false
  private lastConcurrency: ConcurrencyReport | undefined

  constructor(module: ModuleSource | LoadedGuest, options: WasmExecutorOptions = {}) {
    const bufferSize = options.bufferSize ?? DEFAULT_BUFFER_SIZE
    const hwm = options.highWaterMark ?? defaultHighWaterMark(bufferSize)
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm })
    this.source = module
    this.bufferSize = bufferSize
    this.limits = { ...DEFAULT_LIMITS, ...options.limits }
    this.chunkSize = options.chunkSize ?? bufferSize
    this.maxInFlight = options.maxInFlight ?? defaultMaxInFlight(this.chunkSize)
    this.resumeFrom = options.resumeFrom
    if (this.resumeFrom) {
      this.bytesIn = this.bytesProcessed = this.resumeFrom.inputOffset
      this.bytesOut = this.resumeFrom.outputOffset
    }
    const snapshots = options.snapshots
    this.runnerFactory =
      options.runner ??
      runnerChain({
        isolation: options.isolation ?? 'worker',
        recovery: options.recoveryStrategy ?? 'fail',
        stateless: options.stateless,
        deadline: this.limits.deadline,
        snapshots: snapshots && { ...snapshots, inputOffset: this.bytesIn, outputOffset: this.bytesOut },
      })
    this.workers = options.workers
    const wasi = options.wasi
    this.wasi = wasi && Array.isArray(wasi.preopens) ? (wasi as ResolvedWasi) : resolveWasi(wasi ?? {})!
    this.guestConfig = resolveGuestConfig(options.guestConfig)
    this.hooks = {
      output: this.deliver,
      done: this.onDone,
      failed: this.onFailed,
      skipped: this.onSkipped,
      snapshot: this.onSnapshot,
      stderr: this.onStderr,
      guestLog: this.onLog,
    }
  }

  _construct(callback: (err?: Error | null) => void): void {
    const loading = isLoadedGuest(this.source)
      ? Promise.resolve(this.source)
      : loadGuest(this.source, { memoryLimit: this.limits.memory, maxModuleSize: this.limits.moduleSize, loadTimeout: this.limits.loadTimeout })
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
    const resume = this.resumeFrom
    if (resume && resume.moduleHash !== guest.hash) {
      callback(errors.checkpointMismatch(guest.name, `the checkpoint was taken with another module (sha256 ${resume.moduleHash.slice(0, 12)}…, this one is ${String(guest.hash).slice(0, 12)}…)`))
      return
    }
    if (this.guestConfig && guest.abi.kind === 'wasi-command') {
      callback(errors.invalidOption(`guestConfig is for ABI guests, and ${guest.name} is a WASI command: give it wasi.args or wasi.env instead`))
      return
    }
    const limits = this.limits
    this.runner = this.runnerFactory(guest, this.hooks, {
      bufferSize: this.bufferSize,
      chunkSize: this.chunkSize,
      limits: { maxOutputPerChunk: limits.maxOutputPerChunk, maxOutput: limits.maxOutput, memory: limits.memory },
      timeout: limits.timeout,
      maxInFlight: this.maxInFlight,
      wasi: wasiConfig(this.wasi),
      guestConfig: this.guestConfig,
      workers: this.workers,
      highWaterMark: this.readableHighWaterMark,
    })
    this.starting = true
    this.runner.start((err) => {
      this.starting = false
      // Destroyed while starting: the start's own error (no instance) is not news to anyone.
      callback(this.destroyed ? null : err)
    }, resume?.guest)
  }

  /**
   * Node holds back `_destroy` until construction ends, and a start may wait for a worker for
   * as long as another stream holds it: a stream destroyed meanwhile gives up its start at once.
   */
  override destroy(error?: Error): this {
    super.destroy(error)
    if (this.starting) this.runner?.destroy()
    return this
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const offset = offsetOf(chunk) ?? this.bytesIn
    this.bytesIn = offset + chunk.length
    this.chunks++
    this.chunkCallback = callback
    this.runner!.process({ offset, input: chunk }, this.onAccepted)
  }

  /** The runner took the chunk: take the next one, unless output is backed up. */
  private readonly onAccepted = (): void => {
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

  /** Instances running and why (a pool, `maxConcurrency: 'auto'`); undefined for one plain instance. */
  concurrency(): ConcurrencyReport | undefined {
    return this.runner?.concurrency?.() ?? this.lastConcurrency
  }

  override _flush(callback: TransformCallback): void {
    this.flushCallback = callback
    this.runner!.process(endOfInput(this.bytesIn), noop)
  }

  /** The guest's flush is done: trailing output it queued goes out before EOF. */
  private ended(): void {
    this.bytesProcessed = this.bytesIn
    log('done: %d bytes in, %d bytes out', this.bytesIn, this.bytesOut)
    this.lastGuestMs = this.guestTimeMs()
    this.runner?.destroy()
    this.flushed = true
    if (this.queueHead === this.queue.length) this.finishFlush()
  }

  private finishFlush(): void {
    const callback = this.flushCallback
    this.flushCallback = null
    callback?.()
  }

  override _read(size: number): void {
    this.canPush = true
    this.waiting = false
    if (this.queueHead < this.queue.length && !this.drainQueue()) return
    const held = this.heldCallback
    if (held) {
      this.heldCallback = null
      held()
    }
    super._read(size)
    if (!this.stderrFull) this.runner?.resume()
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

  /**
   * One output buffer. A push that fills the readable side does not stop the runner yet: the
   * consumer may read before more output comes. Output that arrives while it is still full is
   * queued, and the runner is asked to hold the rest.
   */
  private readonly deliver = (job: Job, chunk: Buffer): boolean => {
    this.bytesOut += chunk.length
    // The instance stops a bomb inside the call; this holds the total across restarts too.
    if (this.bytesOut > this.limits.maxOutput) {
      const site = { module: this.guestName, exportName: job.input ? 'process_chunk' : 'flush', offset: job.offset }
      this.destroy(errors.outputLimit(site, this.limits.maxOutput, 'maxOutput'))
      return false
    }
    if (this.canPush && this.queueHead === this.queue.length) {
      this.canPush = this.push(chunk)
      return true
    }
    this.queue.push(chunk)
    this.queuedBytes += chunk.length
    if (!this.waiting) {
      this.waiting = true
      if (!this.waitCheckArmed) {
        this.waitCheckArmed = true
        setImmediate(this.checkWait)
      }
    }
    return false
  }

  /**
   * Output queued while the consumer reads in the same turn (a synchronous sink) never waited;
   * output still queued once the event loop has turned did.
   */
  private readonly checkWait = (): void => {
    this.waitCheckArmed = false
    if (this.waiting && this.queueHead < this.queue.length) this.backpressureWaits++
  }

  private readonly onDone = (job: Job): void => {
    if (job.input) this.bytesProcessed = job.offset + job.input.length
    else this.ended()
  }

  private readonly onSkipped = (job: Job, err: WasmSandboxError): void => {
    this.chunksSkipped++
    log('skipped the chunk at offset %d: %s', err.offset, err.message)
    emitSafely(this, 'chunk-error', err)
    if (job.input) this.bytesProcessed = job.offset + job.input.length
    else if (!this.destroyed) this.ended()
  }

  private readonly onSnapshot = (snapshot: Snapshot): void => {
    emitSafely(this, 'snapshot', snapshot)
  }

  /**
   * A WASI program's stderr: an event, and the caller's stream if it gave one, whose backpressure
   * holds the guest as the output's does. Written without regard to it, a guest writing 1 GiB to
   * stderr buffered it all in a slow stream's queue (RSS 71 MB → 1.1 GB in a review's test).
   */
  private readonly onStderr = (chunk: Buffer): boolean => {
    emitSafely(this, 'stderr', chunk)
    const sink = this.wasi.stderr
    if (!sink || sink.write(chunk)) return true
    if (!this.stderrFull) {
      this.stderrFull = true
      sink.once('drain', this.onStderrDrain)
    }
    return false
  }

  private readonly onStderrDrain = (): void => {
    this.stderrFull = false
    this.runner?.resume()
  }

  /** A guest's `sandbox.log` message: to `debug`, and a `'log'` event. */
  private readonly onLog = (entry: GuestLogEntry): void => {
    guestLog('%s %s() at offset %d: %s: %s', entry.module, entry.exportName, entry.offset, entry.level, entry.message)
    emitSafely(this, 'log', entry)
  }

  private readonly onFailed = (_job: Job | undefined, err: WasmSandboxError): void => {
    this.destroy(err)
  }

  override _destroy(err: Error | null, callback: (error: Error | null) => void): void {
    if (err) log('destroyed: %s', err.message)
    this.lastGuestMs = this.guestTimeMs()
    this.lastConcurrency = this.concurrency()
    this.runner?.destroy()
    this.runner = undefined
    this.wasi.stderr?.off('drain', this.onStderrDrain)
    this.queue.length = 0
    this.queueHead = this.queuedBytes = 0
    this.heldCallback = this.chunkCallback = this.flushCallback = null
    callback(err)
  }
}

function noop(): void {}
