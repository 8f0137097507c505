import type { TransformCallback } from 'node:stream'
import { Transform } from 'readable-stream'
import { errors } from '../errors.js'
import { logger } from '../log.js'
import { defaultHighWaterMark, resolveChunking, resolveMaxLatency } from '../options.js'
import { tagOffset } from './offset.js'

const log = logger('chunker')

export interface ChunkerOptions {
  /** Target chunk size in bytes. Default 64 KiB. */
  bufferSize?: number
  /** Cut only just after this delimiter, so that no record is split across chunks. */
  delimiter?: string | Uint8Array
  /** With a delimiter: the longest record accepted. Default max(16 × bufferSize, 1 MiB). */
  maxRecordSize?: number
  /** Bytes buffered on each side before backpressure applies. Default max(bufferSize, 256 KiB). */
  highWaterMark?: number
  /** Input offset of the first byte written (for a resumed stream). Default 0. */
  startOffset?: number
  /**
   * Milliseconds held bytes may wait for more input before they are passed on in a short
   * chunk (with a delimiter, whole records only). Default 10; 0: at the next timer turn;
   * `Infinity`: wait for a full chunk or the end of input.
   */
  maxLatency?: number
}

/**
 * Re-chunks bytes to `bufferSize`, or to runs of whole records when a delimiter is given.
 *
 * Whole windows of an incoming chunk are passed on as zero-copy subarrays; only the tail that
 * does not fill a window is copied, into an accumulator that is handed downstream as it is (so
 * it is never reused) once it fills. Every chunk pushed carries its input offset (see offset.ts).
 *
 * What the caller wrote is never mutated nor tagged: every chunk pushed is a view of our own.
 * A producer may write one Buffer object several times (a reused page); a tag on that object
 * would be overwritten by the next write before the executor read it, and checkpoints would
 * then claim input the guest has not processed.
 *
 * A tail held longer than `maxLatency` goes out short, so a source that stays open and pauses
 * (a socket, a user typing) gets its answer without filling a chunk. One timer, created once and
 * refreshed, measures the age of the held tail; while input keeps coming every window fills long
 * before it fires, so a fast source still gets full chunks.
 */
export class Chunker extends Transform {
  /** Changed only between cuts (`resize`), by a tuner: records are never cut either way. */
  bufferSize: number
  /**
   * Called once each write is cut, for a tuner: its timer alone never fires while a source that
   * needs no I/O (an in-memory iterable) feeds an inline guest, all of it in microtasks.
   */
  afterWrite: (() => void) | undefined
  readonly delimiter: Buffer | undefined
  readonly maxRecordSize: number
  /** Input offset of the next byte to be pushed. */
  private offset: number
  private acc: Buffer | null = null
  private accStart = 0
  private accEnd = 0
  /** Where to resume searching for the end of a long record in the accumulator. */
  private scanFrom = 0
  private readonly maxLatency: number
  private readonly selfOverlapping: boolean
  private timer: NodeJS.Timeout | undefined
  /** The timer is running for the tail held now. */
  private timerArmed = false
  /** The timer fired while the readable side still held data: cut once the consumer asks. */
  private flushDue = false
  private dueScheduled = false
  /**
   * The stream called _read and nothing has been pushed since. It calls _read once and then waits
   * for a push, so a cut left for _read while this is set would wait for the next write.
   */
  private readRequested = false

  constructor(options: ChunkerOptions = {}) {
    const { bufferSize, delimiter, maxRecordSize } = resolveChunking(options.bufferSize, options.delimiter, options.maxRecordSize)
    const hwm = options.highWaterMark ?? defaultHighWaterMark(bufferSize)
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm })
    this.bufferSize = bufferSize
    this.delimiter = delimiter
    this.selfOverlapping = delimiter !== undefined && overlapsItself(delimiter)
    this.maxRecordSize = maxRecordSize
    this.offset = options.startOffset ?? 0
    this.maxLatency = resolveMaxLatency(options.maxLatency)
  }
  /**
   * Chunks cut from now on are up to `bufferSize` bytes (the held tail is cut at the new size):
   * for a tuner that chooses the size while the stream runs. Not past `maxRecordSize`.
   */
  resize(bufferSize: number): boolean {
    if (bufferSize > this.maxRecordSize || (this.delimiter && this.delimiter.length > bufferSize)) return false
    this.bufferSize = bufferSize
    return true
  }


  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const heldBefore = this.accEnd > this.accStart
    const offsetBefore = this.offset
    try {
      let pos = 0
      if (heldBefore) pos = this.fillAccumulator(chunk)
      if (pos < chunk.length) {
        pos = this.delimiter ? this.cutRecordsInPlace(chunk, pos) : this.cutBytesInPlace(chunk, pos)
        if (pos < chunk.length) this.keep(chunk, pos)
      }
    } catch (err) {
      callback(err as Error)
      return
    }
    if (this.maxLatency !== Infinity && this.accEnd > this.accStart) {
      // After a cut the tail is new bytes only (anything older went out with the cut), so its
      // wait starts now. Without one, the bytes held before are still the oldest and keep their
      // deadline, unless the timer already fired on an unfinished record: new bytes may end it.
      if (!heldBefore || this.offset !== offsetBefore || (!this.timerArmed && !this.flushDue)) this.armTimer()
    }
    this.afterWrite?.()
    callback()
  }

  override _read(size: number): void {
    this.readRequested = true
    super._read(size)
    // Not at once: input already on its way must get the chance to fill the window first (a
    // piped source resumes a tick after the drain this read causes; a socket's next bytes are
    // read in the poll phase), or a fast source behind a slow consumer would get short chunks.
    if (this.flushDue && !this.dueScheduled) {
      this.dueScheduled = true
      setImmediate(this.onDue)
    }
  }

  override _flush(callback: TransformCallback): void {
    this.stopTimer()
    const pending = this.accEnd - this.accStart
    if (pending > 0) {
      if (this.delimiter && pending > this.maxRecordSize) {
        callback(errors.recordTooLarge(this.offset, this.maxRecordSize))
        return
      }
      this.emitChunk(this.acc!, this.accStart, this.accEnd)
    }
    this.acc = null
    log('end of input at offset %d', this.offset)
    callback()
  }

  /** Pushes `source[start..end)` as a fresh view: the only object we may tag is one we made. */
  private emitChunk(source: Buffer, start: number, end: number): void {
    this.readRequested = false
    this.push(tagOffset(source.subarray(start, end), this.offset))
    this.offset += end - start
  }

  private cutBytesInPlace(chunk: Buffer, pos: number): number {
    const size = this.bufferSize
    while (chunk.length - pos >= size) {
      this.emitChunk(chunk, pos, pos + size)
      pos += size
    }
    return pos
  }

  /** Emits runs of whole records straight from `chunk`; returns where the unfinished tail starts. */
  private cutRecordsInPlace(chunk: Buffer, pos: number): number {
    const size = this.bufferSize
    while (chunk.length - pos >= size) {
      const last = this.lastDelimiterEnd(chunk, pos, pos + size)
      if (last >= 0) {
        this.emitChunk(chunk, pos, last)
        pos = last
        continue
      }
      const next = this.nextDelimiterEnd(chunk, pos, pos + size)
      if (next < 0) break
      this.checkRecord(next - pos)
      this.emitChunk(chunk, pos, next)
      pos = next
    }
    return pos
  }

  /**
   * End of the last delimiter that ends by `limit`, in records starting at `start`; -1 if none.
   * A delimiter that can overlap itself (`'||'`) must be found left to right from a record start:
   * searched from the right, `'a|||'` would match the second and third bars and cut the next
   * delimiter in two.
   */
  private lastDelimiterEnd(buf: Buffer, start: number, limit: number): number {
    const delimiter = this.delimiter!
    const dl = delimiter.length
    if (!this.selfOverlapping) {
      const at = buf.lastIndexOf(delimiter, limit - dl)
      return at >= start ? at + dl : -1
    }
    let end = -1
    for (let at = buf.indexOf(delimiter, start); at >= 0 && at + dl <= limit; at = buf.indexOf(delimiter, at + dl)) end = at + dl
    return end
  }

  /** End of the first delimiter that ends after `limit`, in records starting at `start`; -1 if none. */
  private nextDelimiterEnd(buf: Buffer, start: number, limit: number): number {
    const delimiter = this.delimiter!
    const dl = delimiter.length
    let at = this.selfOverlapping ? buf.indexOf(delimiter, start) : buf.indexOf(delimiter, Math.max(start, limit - dl + 1))
    while (at >= 0 && at + dl <= limit) at = buf.indexOf(delimiter, at + dl)
    return endOf(at, dl)
  }

  /** Tops up the accumulator from `chunk`, cutting whenever it is full; returns bytes consumed. */
  private fillAccumulator(chunk: Buffer): number {
    let pos = 0
    while (pos < chunk.length && this.accEnd > this.accStart) {
      const pending = this.accEnd - this.accStart
      // Below a window, take just enough to fill it; in a long record, a window at a time, so
      // the accumulator never holds more than the record plus one window.
      const want = pending < this.bufferSize ? this.bufferSize - pending : this.bufferSize
      const take = Math.min(chunk.length - pos, want)
      this.append(chunk, pos, pos + take)
      pos += take
      if (this.accEnd - this.accStart >= this.bufferSize) this.cutAccumulator()
    }
    return pos
  }

  private cutAccumulator(): void {
    const acc = this.acc!
    const size = this.bufferSize
    const startBefore = this.accStart
    while (this.accEnd - this.accStart >= size) {
      const start = this.accStart
      let end = start + size
      if (this.delimiter) {
        const found = this.findRecordsEnd(acc, start)
        if (found < 0) break
        end = found
      }
      this.emitChunk(acc, start, end)
      this.accStart = end
      this.scanFrom = end
    }
    if (this.accStart === startBefore) return
    // What was emitted is now owned downstream, so the tail moves to a fresh buffer.
    const rest = this.accEnd - this.accStart
    this.acc = null
    if (rest > 0) this.keep(acc.subarray(this.accStart, this.accEnd), 0)
    else this.accStart = this.accEnd = 0
  }

  /** End of the last whole record within a window at `start`, or of one long record; -1 if unfinished. */
  private findRecordsEnd(acc: Buffer, start: number): number {
    const delimiter = this.delimiter!
    const dl = delimiter.length
    const window = acc.subarray(0, this.accEnd)
    const last = this.lastDelimiterEnd(window, start, start + this.bufferSize)
    if (last >= 0) return last
    const next = this.selfOverlapping
      ? this.nextDelimiterEnd(window, start, start + this.bufferSize)
      : endOf(window.indexOf(delimiter, Math.max(this.scanFrom, start + this.bufferSize - dl + 1)), dl)
    if (next >= 0) {
      this.checkRecord(next - start)
      return next
    }
    this.scanFrom = Math.max(start, this.accEnd - dl + 1)
    this.checkRecord(this.accEnd - start)
    return -1
  }

  private checkRecord(length: number): void {
    if (this.delimiter && length > this.maxRecordSize) {
      throw errors.recordTooLarge(this.offset, this.maxRecordSize)
    }
  }

  /** Copies `chunk[from..]` into a fresh accumulator (the only copy on this path). */
  private keep(chunk: Buffer, from: number): void {
    const length = chunk.length - from
    this.checkRecord(length)
    const acc = Buffer.allocUnsafe(Math.max(this.bufferSize, length))
    chunk.copy(acc, 0, from)
    this.acc = acc
    this.accStart = 0
    this.accEnd = length
    this.scanFrom = 0
  }

  private append(chunk: Buffer, from: number, to: number): void {
    const length = to - from
    let acc = this.acc!
    if (this.accEnd + length > acc.length) {
      // Only a long record outgrows a window; it is bounded by maxRecordSize (checked on cut).
      const pending = this.accEnd - this.accStart
      const grown = Buffer.allocUnsafe(Math.max(2 * acc.length, pending + length))
      acc.copy(grown, 0, this.accStart, this.accEnd)
      this.scanFrom -= this.accStart
      this.accEnd = pending
      this.accStart = 0
      this.acc = acc = grown
    }
    chunk.copy(acc, this.accEnd, from, to)
    this.accEnd += length
  }

  private armTimer(): void {
    this.timerArmed = true
    this.flushDue = false
    // One Timeout per stream, re-armed by refresh() with no allocation. Unref'd: a held tail is no
    // reason to keep a process alive (an open source is, if there is one).
    if (this.timer) this.timer.refresh()
    else this.timer = setTimeout(this.onTimer, this.maxLatency).unref()
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    this.timerArmed = this.flushDue = false
  }

  private readonly onTimer = (): void => {
    this.timerArmed = false
    if (this.destroyed || this.accEnd === this.accStart) return
    // Output still unread means the consumer is busy: a short chunk now would gain no time, and
    // pushing it would go past the highWaterMark. _read cuts once the consumer asks for more,
    // unless it already has: then no further _read comes before a push, and this is that push.
    if (this.readableLength > 0 && !this.readRequested) this.flushDue = true
    else this.flushHeld()
  }

  private readonly onDue = (): void => {
    this.dueScheduled = false
    // A write that cut a chunk meanwhile left a fresh tail, with its own deadline.
    if (!this.flushDue || this.destroyed) return
    this.flushDue = false
    this.flushHeld()
  }

  /** Pushes what is held: all of it, or with a delimiter the whole records (an unfinished one stays). */
  private flushHeld(): void {
    const acc = this.acc
    const start = this.accStart
    const held = this.accEnd
    if (!acc || held === start) return
    let end = held
    const delimiter = this.delimiter
    if (delimiter) {
      const dl = delimiter.length
      if (held - start < dl) return
      const last = this.lastDelimiterEnd(acc.subarray(0, held), start, held)
      if (last < 0) return
      end = last
    }
    try {
      this.emitChunk(acc, start, end)
      // As in cutAccumulator: what went out is owned downstream, so the rest moves.
      this.acc = null
      if (end < held) this.keep(acc.subarray(end, held), 0)
      else this.accStart = this.accEnd = 0
    } catch (err) {
      this.destroy(err as Error)
    }
  }

  override _destroy(err: Error | null, callback: (error: Error | null) => void): void {
    this.stopTimer()
    this.acc = null
    callback(err)
  }
}

function endOf(at: number, length: number): number {
  return at < 0 ? -1 : at + length
}

/** Has the delimiter a proper prefix that is also its suffix (`'||'`, `'abab'`)? */
function overlapsItself(delimiter: Buffer): boolean {
  for (let k = 1; k < delimiter.length; k++) {
    if (delimiter.subarray(0, k).equals(delimiter.subarray(delimiter.length - k))) return true
  }
  return false
}
