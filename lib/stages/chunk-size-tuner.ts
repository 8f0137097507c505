import { AUTO_BUFFER_SIZES } from '../options.js'
import type { Chunker } from './chunker.js'

/**
 * Throughput is measured over windows this long in which the guest took input: short, since a
 * fast guest gets through a 256 MiB stream in a fifth of a second.
 */
const WINDOW_MS = 50
/** A larger chunk size is kept only if it raised throughput by this much. */
const MIN_GAIN = 1.1

/** What `metrics().chunking` reports for `bufferSize: 'auto'`. */
export interface ChunkingReport {
  bufferSize: number
  auto: true
  reason: string
  /** Throughput measured at each size tried, in MB/s. */
  samples: Array<{ bufferSize: number; mbps: number }>
}

/**
 * `bufferSize: 'auto'`: tries each size of AUTO_BUFFER_SIZES in turn while the stream runs and
 * keeps the last one that raised throughput by 10 % or more. It reads a progress counter on an
 * unref'd timer and after each write the chunker cuts (`poll`), so chunks pay nothing for it; the
 * first window in which input moved (the start) and windows in which none did (a slow source)
 * are not measured. The chunker changes size only between cuts, and a record is never cut.
 */
export class ChunkSizeTuner {
  private readonly chunker: Pick<Chunker, 'bufferSize' | 'maxRecordSize' | 'resize'>
  private readonly progress: () => number
  private readonly now: () => number
  private readonly timer: NodeJS.Timeout
  private last: { at: number; bytes: number }
  private step = 0
  private warm = false
  private stopped = false
  private reason = 'measuring'
  readonly samples: ChunkingReport['samples'] = []

  constructor(chunker: Pick<Chunker, 'bufferSize' | 'maxRecordSize' | 'resize'>, progress: () => number, now: () => number = () => performance.now()) {
    this.chunker = chunker
    this.progress = progress
    this.now = now
    this.last = { at: now(), bytes: progress() }
    this.timer = setInterval(() => this.poll(), WINDOW_MS)
    this.timer.unref()
  }

  /**
   * Measures if a window has passed: on the timer, and after each write for streams that leave
   * the timer no turn. Either may have just measured; a shorter window would be noise.
   */
  poll(): void {
    const at = this.now()
    if (at - this.last.at >= WINDOW_MS) this.measure(at)
  }

  report(): ChunkingReport {
    return { bufferSize: this.chunker.bufferSize, auto: true, reason: this.reason, samples: this.samples }
  }

  stop(): void {
    clearInterval(this.timer)
    this.stopped = true
    if (this.reason === 'measuring') this.reason = `the stream ended while measuring, at ${this.chunker.bufferSize / 1024} KiB`
  }

  private measure(at: number): void {
    if (this.stopped) return
    const now = { at, bytes: this.progress() }
    const moved = now.bytes - this.last.bytes
    const mbps = moved / 1048.576 / (now.at - this.last.at)
    this.last = now
    if (moved === 0) return
    if (!this.warm) {
      // The first window with input holds the start (a worker, an instance, code not yet
      // optimised): measured, it made every next size look 10 % better than it was.
      this.warm = true
      return
    }
    const size = AUTO_BUFFER_SIZES[this.step]!
    const previous = this.samples.at(-1)
    this.samples.push({ bufferSize: size, mbps })
    if (previous && mbps < previous.mbps * MIN_GAIN) {
      if (mbps < previous.mbps) this.chunker.resize(previous.bufferSize)
      this.settle(`${size / 1024} KiB chunks changed throughput ${Math.round((mbps / previous.mbps - 1) * 100)} %, under ${Math.round((MIN_GAIN - 1) * 100)} %: ${this.chunker.bufferSize / 1024} KiB kept`)
    } else if (this.step + 1 < AUTO_BUFFER_SIZES.length) {
      const next = AUTO_BUFFER_SIZES[this.step + 1]!
      if (this.chunker.resize(next)) this.step++
      else this.settle(`${size / 1024} KiB: maxRecordSize ${this.chunker.maxRecordSize} caps it`)
    } else {
      this.settle(`${size / 1024} KiB, the largest tried`)
    }
  }

  private settle(reason: string): void {
    this.reason = reason
    this.stop()
  }
}
