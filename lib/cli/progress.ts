import { Writable } from 'node:stream'

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

/** 1536 → "1.5 KiB": three significant figures at most, binary units. */
export function formatBytes(bytes: number): string {
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit++
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2
  return `${value.toFixed(digits)} ${UNITS[unit]}`
}

/** 75 → "1:15", 3725 → "1:02:05". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  const hh = Math.floor(s / 3600)
  const mm = Math.floor((s % 3600) / 60)
  const ss = String(s % 60).padStart(2, '0')
  return hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`
}

export interface ProgressSample {
  /** Input offset reached (absolute: a resumed run starts past 0). */
  done: number
  /** Where this run started (the resume offset, or 0): the rate counts only what it read. */
  start: number
  /** Input size when known (a file, or standard input redirected from one). */
  total: number | undefined
  elapsedMs: number
  /** The run is over: the time it took instead of an ETA. */
  final?: boolean
}

/** "12.0 MiB / 40.0 MiB  30%  4.00 MiB/s  ETA 0:07", or without size "12.0 MiB  4.00 MiB/s". */
export function formatProgress({ done, start, total, elapsedMs, final = false }: ProgressSample): string {
  const rate = elapsedMs > 0 ? ((done - start) * 1000) / elapsedMs : 0
  const parts = [total === undefined ? formatBytes(done) : `${formatBytes(done)} / ${formatBytes(total)}`]
  if (total !== undefined && total > 0) parts.push(`${Math.min(100, Math.floor((done * 100) / total))}%`)
  parts.push(`${formatBytes(rate)}/s`)
  if (final) parts.push(`in ${formatDuration(elapsedMs / 1000)}`)
  else if (total !== undefined && rate > 0 && done < total) parts.push(`ETA ${formatDuration((total - done) / rate)}`)
  return parts.join('  ')
}

const CLEAR = '\r\x1b[K'

/**
 * One line on a terminal, redrawn in place every `interval` ms. Anything else that writes to
 * the same terminal (a WASI program's stderr) goes through `passthrough`, which clears the line
 * first; the line is redrawn only at the start of a line, so a message in pieces stays whole.
 */
export class ProgressLine {
  private readonly out: NodeJS.WriteStream
  private readonly total: number | undefined
  private readonly interval: number
  private read: (() => number) | undefined
  private timer: NodeJS.Timeout | undefined
  private startedAt = 0
  private start = 0
  private shown = false
  private atLineStart = true

  constructor(out: NodeJS.WriteStream, total: number | undefined, interval = 250) {
    this.out = out
    this.total = total
    this.interval = interval
  }

  /** Starts drawing, reading the input offset reached from `read` (`stream.metrics().bytesProcessed`). */
  track(read: () => number): void {
    this.read = read
    this.startedAt = performance.now()
    this.start = read()
    this.timer = setInterval(() => this.draw(), this.interval)
    // The line never keeps the process alive on its own.
    this.timer.unref()
  }

  /** Stops; on success the last state stays on screen as a summary line, on failure it is wiped. */
  stop(succeeded: boolean): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    if (!this.read) return
    if (succeeded) {
      this.draw(true)
      if (this.shown) this.out.write('\n')
    } else if (this.shown) {
      this.out.write(CLEAR)
    }
    this.shown = false
    this.read = undefined
  }

  /** A writable for other output to the same terminal. */
  passthrough(): Writable {
    return new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        if (this.shown) this.out.write(CLEAR)
        this.shown = false
        if (chunk.length > 0) this.atLineStart = chunk[chunk.length - 1] === 0x0a
        this.out.write(chunk, callback)
      },
    })
  }

  private draw(final = false): void {
    if (!this.read || !this.atLineStart) return
    const elapsedMs = performance.now() - this.startedAt
    const line = formatProgress({ done: this.read(), start: this.start, total: this.total, elapsedMs, final })
    this.out.write(`${CLEAR}${line}`)
    this.shown = true
  }
}
