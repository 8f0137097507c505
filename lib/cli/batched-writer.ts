import { writev } from 'node:fs'
import { Writable } from 'node:stream'
import { unwritten } from '../checkpoint/file-sink.js'

/** Chunks under this size are copied together into staging buffers of STAGING_BYTES. */
const SMALL_CHUNK = 4 * 1024
const STAGING_BYTES = 64 * 1024

/**
 * Writes to an open file descriptor, at its own offset (so `>>` still appends), in batches of
 * `batchBytes`. Node's file stream writes a chunk on its own whenever no write is in flight: for
 * 512 MiB of output in 64 KiB chunks the CLI made 513 single-chunk writes beside 542 writevs, each
 * a thread-pool round trip, and on this VM such a call costs the main thread tens of microseconds
 * whatever its size. Here a chunk waits for others until the batch is full, the stream ends, or
 * `maxDelayMs` has passed (so a slow stream's output still reaches the file within that time, for
 * `tail -f`). A batch holds `batchBytes` plus the chunk or chunks that filled it, besides what the
 * highWaterMark (also `batchBytes`) lets the stream buffer. Output still in a batch when the
 * stream fails is not written: a failed run's file ends up to a batch (or 10 ms) short of what
 * the guest had produced.
 */
export class BatchedWriter extends Writable {
  private readonly fd: number
  private readonly batchBytes: number
  private readonly maxDelayMs: number
  private readonly writev: WritevFunction
  private batch: Buffer[] = []
  private batched = 0
  private timer: NodeJS.Timeout | undefined
  private writing = false
  /** Where chunks under SMALL_CHUNK are copied together. */
  private staging: Buffer | undefined
  private staged = 0
  /** What waits for the write in flight: the stream's next step, or the end of a destroy. */
  private afterWrite: (() => void) | undefined

  /** `writevFn` is `fs.writev` but for tests, which give one that takes fewer bytes or fails. */
  constructor(fd: number, batchBytes: number, maxDelayMs: number, writevFn: WritevFunction = writev) {
    super({ highWaterMark: batchBytes })
    this.fd = fd
    this.batchBytes = batchBytes
    this.maxDelayMs = maxDelayMs
    this.writev = writevFn
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.add(chunk)
    this.whenIdle(() => this.settle(callback))
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    for (const { chunk } of chunks) this.add(chunk)
    this.whenIdle(() => this.settle(callback))
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.whenIdle(() => this.flush(callback))
  }

  /** 'close' waits for a write in flight: the owner may close the descriptor on 'close'. */
  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.timer)
    this.batch = []
    this.batched = 0
    this.staging = undefined
    this.staged = 0
    // A step held for the write in flight (a write, `_final`) is called back first, destroyed.
    const held = this.afterWrite
    if (!this.writing) {
      callback(err)
      return
    }
    this.afterWrite = () => {
      held?.()
      callback(err)
    }
  }

  /**
   * Small chunks (a filter's matching lines) are copied together: the batch counts bytes, and
   * 4 MiB of 8-byte Buffers held 125 MiB of memory.
   */
  private add(chunk: Buffer): void {
    // An empty write would read as a write that took nothing.
    if (chunk.length === 0) return
    this.batched += chunk.length
    if (chunk.length >= SMALL_CHUNK) {
      this.seal()
      this.batch.push(chunk)
      return
    }
    if (!this.staging || this.staged + chunk.length > this.staging.length) {
      this.seal()
      this.staging = Buffer.allocUnsafe(STAGING_BYTES)
    }
    chunk.copy(this.staging, this.staged)
    this.staged += chunk.length
  }

  /** The small chunks copied so far join the batch. */
  private seal(): void {
    if (this.staging && this.staged > 0) this.batch.push(this.staging.subarray(0, this.staged))
    this.staging = undefined
    this.staged = 0
  }

  /** A write from the timer may be in flight when the stream moves on: one write at a time keeps the order. */
  private whenIdle(next: () => void): void {
    if (this.writing) this.afterWrite = next
    else next()
  }

  /** The batch is full: write it before taking more. Else take more, within maxDelayMs. */
  private settle(callback: (error?: Error | null) => void): void {
    if (this.destroyed) {
      callback(streamDestroyed())
      return
    }
    if (this.batched >= this.batchBytes) {
      this.flush(callback)
      return
    }
    this.timer ??= setTimeout(this.onDelay, this.maxDelayMs).unref()
    callback()
  }

  private readonly onDelay = (): void => {
    this.timer = undefined
    if (this.writing || this.batched === 0 || this.destroyed) return
    this.flush((err) => {
      if (err) this.destroy(err)
    })
  }

  private flush(callback: (error?: Error | null) => void): void {
    if (this.destroyed) {
      callback(streamDestroyed())
      return
    }
    clearTimeout(this.timer)
    this.timer = undefined
    this.seal()
    const buffers = this.batch
    this.batch = []
    this.batched = 0
    this.writeAll(buffers, (err) => {
      this.writing = false
      const next = this.afterWrite
      this.afterWrite = undefined
      callback(err)
      // Also once destroyed (by the caller, or by this write failing): the step waiting is called back.
      next?.()
    })
  }

  /** A write may take fewer bytes than given (a signal, a full disk): the rest goes again. */
  private writeAll(buffers: Buffer[], done: (error?: Error | null) => void): void {
    if (buffers.length === 0) {
      done()
      return
    }
    this.writing = true
    this.writev(this.fd, buffers, (err, written) => {
      if (err) done(err)
      else if (written === 0) done(new Error('writing the output wrote nothing'))
      else if (this.destroyed) done()
      else this.writeAll(unwritten(buffers, written), done)
    })
  }
}

/** What Node's own streams give the callback of a write a destroy came before. */
function streamDestroyed(): Error {
  return Object.assign(new Error('Cannot call write after a stream was destroyed'), { code: 'ERR_STREAM_DESTROYED' })
}

export type WritevFunction = (fd: number, buffers: Buffer[], callback: (err: NodeJS.ErrnoException | null, written: number) => void) => void
