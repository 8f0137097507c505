import type { TransformCallback } from 'node:stream'
import { Transform } from 'readable-stream'
import { NO_OUTPUT_LIMITS, type OutputLimits } from '../guest/instance.js'
import { isLoadedGuest, loadGuest, type LoadedGuest, type ModuleSource } from '../guest/load.js'
import { logger } from '../log.js'
import { DEFAULT_BUFFER_SIZE } from '../options.js'
import { InlineRunner } from '../runners/inline.js'
import type { GuestRunner, RunnerFactory } from '../runners/runner.js'
import { offsetOf } from './offset.js'

const log = logger('executor')

export interface WasmExecutorOptions {
  /** Input region the guest allocates up front. Default 64 KiB. */
  bufferSize?: number
  /** Bytes buffered on each side before backpressure applies. Default bufferSize. */
  highWaterMark?: number
  /** Output caps enforced inside `emit`. Default: none. */
  outputLimits?: OutputLimits
  /** Where the guest runs. Default: inline on this thread. */
  runner?: RunnerFactory
}

const inlineRunner: RunnerFactory = (guest, sink, options) => new InlineRunner(guest, sink, options)

/**
 * Runs a guest over every chunk: one compile (cached), one instance for the whole stream,
 * `process_chunk` per chunk, `flush` at the end. Emitted output is pushed in order; the write
 * callback is held while the readable side is full (Transform semantics), so the source waits.
 */
export class WasmExecutor extends Transform {
  /** Input bytes handed to the guest so far (or the offset after the last chunk). */
  bytesIn = 0
  /** Output bytes the guest emitted so far. */
  bytesOut = 0
  private runner: GuestRunner | undefined
  /**
   * Outputs of the current chunk not yet pushed because the readable side is full. A guest can
   * emit a chunk's whole output in one synchronous call; holding it here (and the write callback
   * with it) until `_read` asks for more keeps the buffered total to that one chunk's output plus
   * highWaterMark, where relying on Transform alone lets several chunks' outputs pile up.
   */
  private readonly queue: Buffer[] = []
  private queueHead = 0
  /** Bytes waiting in `queue`. */
  queuedBytes = 0
  private canPush = true
  private heldCallback: TransformCallback | null = null
  private chunkCallback: TransformCallback | null = null
  private readonly source: ModuleSource | LoadedGuest
  private readonly bufferSize: number
  private readonly outputLimits: OutputLimits
  private readonly runnerFactory: RunnerFactory

  constructor(module: ModuleSource | LoadedGuest, options: WasmExecutorOptions = {}) {
    const bufferSize = options.bufferSize ?? DEFAULT_BUFFER_SIZE
    const hwm = options.highWaterMark ?? bufferSize
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm })
    this.source = module
    this.bufferSize = bufferSize
    this.outputLimits = options.outputLimits ?? NO_OUTPUT_LIMITS
    this.runnerFactory = options.runner ?? inlineRunner
  }

  _construct(callback: (err?: Error | null) => void): void {
    const loading = isLoadedGuest(this.source) ? Promise.resolve(this.source) : loadGuest(this.source)
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
    this.runner = this.runnerFactory(guest, this.pushOutput, {
      bufferSize: this.bufferSize,
      limits: this.outputLimits,
    })
    this.runner.start(callback)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const offset = offsetOf(chunk) ?? this.bytesIn
    this.bytesIn = offset + chunk.length
    this.chunkCallback = callback
    this.runner!.process(chunk, offset, this.onProcessed)
  }

  private readonly onProcessed = (err?: Error | null): void => {
    const callback = this.chunkCallback!
    this.chunkCallback = null
    if (err || this.queueHead === this.queue.length) callback(err)
    else this.heldCallback = callback
  }

  override _flush(callback: TransformCallback): void {
    // Through onProcessed, so trailing output queued by the guest's flush goes out before EOF.
    this.chunkCallback = (err) => {
      if (err) log('flush failed: %s', err.message)
      else log('done: %d bytes in, %d bytes out', this.bytesIn, this.bytesOut)
      callback(err)
    }
    this.runner!.flush(this.bytesIn, this.onProcessed)
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
    return true
  }

  override _destroy(err: Error | null, callback: (error: Error | null) => void): void {
    if (err) log('destroyed: %s', err.message)
    this.runner?.destroy()
    this.runner = undefined
    this.queue.length = 0
    this.queueHead = this.queuedBytes = 0
    this.heldCallback = this.chunkCallback = null
    callback(err)
  }

  private readonly pushOutput = (chunk: Buffer): void => {
    this.bytesOut += chunk.length
    if (this.canPush && this.queueHead === this.queue.length) {
      this.canPush = this.push(chunk)
      return
    }
    this.queue.push(chunk)
    this.queuedBytes += chunk.length
  }
}
