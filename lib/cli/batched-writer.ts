import { writev } from 'node:fs'
import { Writable } from 'node:stream'
import { unwritten } from '../checkpoint/file-sink.js'

/**
 * Writes to an open file descriptor, at its own offset (so `>>` still appends), in batches of at
 * least `batchBytes`. Node's file stream writes a chunk on its own whenever no write is in flight:
 * for 512 MiB of output in 64 KiB chunks the CLI made 513 single-chunk writes beside 542 writevs,
 * each a thread-pool round trip, and on this VM such a call costs the main thread tens of
 * microseconds whatever its size. Here a chunk waits for others until the batch is full or the
 * stream ends (`tail -f` sees the file grow in batches, not chunks). Holds at most `batchBytes`
 * beyond its highWaterMark (also `batchBytes`).
 */
export class BatchedWriter extends Writable {
  private readonly fd: number
  private readonly batchBytes: number
  private readonly writev: WritevFunction
  private batch: Buffer[] = []
  private batched = 0

  /** `writevFn` is `fs.writev` but for tests, which give one that takes fewer bytes or fails. */
  constructor(fd: number, batchBytes: number, writevFn: WritevFunction = writev) {
    super({ highWaterMark: batchBytes })
    this.fd = fd
    this.batchBytes = batchBytes
    this.writev = writevFn
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.batch.push(chunk)
    this.batched += chunk.length
    if (this.batched < this.batchBytes) callback()
    else this.flush(callback)
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    for (const { chunk } of chunks) {
      this.batch.push(chunk)
      this.batched += chunk.length
    }
    if (this.batched < this.batchBytes) callback()
    else this.flush(callback)
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.flush(callback)
  }

  private flush(callback: (error?: Error | null) => void): void {
    const buffers = this.batch
    this.batch = []
    this.batched = 0
    this.writeAll(buffers, callback)
  }

  /** A write may take fewer bytes than given (a signal, a full disk): the rest goes again. */
  private writeAll(buffers: Buffer[], callback: (error?: Error | null) => void): void {
    if (buffers.length === 0) {
      callback()
      return
    }
    this.writev(this.fd, buffers, (err, written) => {
      if (err) callback(err)
      else if (written === 0) callback(new Error('writing the output wrote nothing'))
      else this.writeAll(unwritten(buffers, written), callback)
    })
  }
}

export type WritevFunction = (fd: number, buffers: Buffer[], callback: (err: NodeJS.ErrnoException | null, written: number) => void) => void
