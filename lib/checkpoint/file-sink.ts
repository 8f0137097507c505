import type { FileHandle } from 'node:fs/promises'
import { Writable } from 'readable-stream'

/**
 * Writes a stream to an open file from a given position and can promise that the file is
 * durable up to an offset (written, then fsync'd). processFile saves a checkpoint only after
 * that promise resolves, which is what makes its output exactly-once across crashes.
 */
export class FileSink extends Writable {
  /** Absolute file position of the next byte. */
  position: number
  private readonly file: FileHandle
  private readonly waiters: { offset: number; resolve: () => void; reject: (err: Error) => void }[] = []
  private syncing: Promise<void> | undefined
  /** The file is cut to `position` before the first write, or at the end if nothing is written. */
  private truncateFirst: boolean

  /**
   * With `truncate`, the file is cut at `position` only once there is output to write (or at a
   * successful end): a run that fails before its first byte (a module that does not load, a guest
   * that traps in `init`) leaves the file as it was.
   */
  constructor(file: FileHandle, position: number, highWaterMark = 64 * 1024, truncate = false) {
    super({ highWaterMark })
    this.file = file
    this.position = position
    this.truncateFirst = truncate
  }

  /** Resolves once every byte before `offset` is written and fsync'd. */
  durable(offset: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ offset, resolve, reject })
      this.settle()
    })
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writeAll([chunk]).then(() => callback(), callback)
  }

  /**
   * The chunks buffered while a write was in flight go out in one call: a file written a chunk at
   * a time paid a thread-pool round trip per chunk, a large part of a fast guest's run.
   */
  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.writeAll(chunks.map((c) => c.chunk)).then(() => callback(), callback)
  }

  /** A write may take fewer bytes than given (a signal, a full disk): the rest goes again. */
  private async writeAll(buffers: Buffer[]): Promise<void> {
    await this.truncateOnce()
    let rest = buffers
    while (rest.length > 0) {
      const { bytesWritten } = rest.length === 1 ? await this.file.write(rest[0]!, 0, rest[0]!.length, this.position) : await this.file.writev(rest, this.position)
      if (bytesWritten === 0) throw new Error(`writing the output at byte ${this.position} wrote nothing`)
      this.position += bytesWritten
      this.settle()
      rest = unwritten(rest, bytesWritten)
    }
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.truncateOnce()
      .then(() => this.file.sync())
      .then(() => callback(), callback)
  }

  private async truncateOnce(): Promise<void> {
    if (!this.truncateFirst) return
    this.truncateFirst = false
    await this.file.truncate(this.position)
  }

  override _destroy(err: Error | null, callback: (error: Error | null) => void): void {
    for (const waiter of this.waiters.splice(0)) waiter.reject(err ?? new Error('the output was closed before it was durable'))
    callback(err)
  }

  private settle(): void {
    if (this.syncing || this.waiters.length === 0 || this.waiters[0]!.offset > this.position) return
    const upTo = this.position
    this.syncing = this.file.sync().then(
      () => {
        this.syncing = undefined
        while (this.waiters.length > 0 && this.waiters[0]!.offset <= upTo) this.waiters.shift()!.resolve()
        this.settle()
      },
      (err: Error) => {
        this.syncing = undefined
        for (const waiter of this.waiters.splice(0)) waiter.reject(err)
      },
    )
  }
}

/** What is left of `buffers` once the first `written` bytes have gone. */
export function unwritten(buffers: Buffer[], written: number): Buffer[] {
  let i = 0
  while (i < buffers.length && written >= buffers[i]!.length) written -= buffers[i++]!.length
  if (i === buffers.length) return []
  const rest = buffers.slice(i)
  rest[0] = rest[0]!.subarray(written)
  return rest
}
