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
 * The windows of one comparison: the larger size, the kept one twice, the larger one again. A
 * steady drift of the machine over the four moves both sides alike, where one window of each,
 * one after the other, read the drift as the sizes' difference. The larger size goes first so
 * that what is left of the start (code still being optimised) counts against it: in doubt, the
 * smaller size stays. Windows are noisy here: 50 ms windows of `upper` at one size read from 830
 * to 2,450 MB/s within one stream, and whole streams drifted from 1,050 to 2,330 MB/s in a minute.
 */
const PLAN = ['larger', 'kept', 'kept', 'larger'] as const

/**
 * `bufferSize: 'auto'`: compares each size of AUTO_BUFFER_SIZES with the next one up while the
 * stream runs, over windows taken in the order of PLAN, and moves up only while the larger size
 * raised throughput by 10 % or more. It reads a progress counter on an unref'd timer and after
 * each write the chunker cuts (`poll`), so chunks pay nothing for it; the first window in which
 * input moved (the start) and windows in which none did (a slow source) are not measured. The
 * chunker changes size only between cuts, and a record is never cut.
 */
export class ChunkSizeTuner {
  private readonly chunker: Pick<Chunker, 'bufferSize' | 'maxRecordSize' | 'resize'>
  private readonly progress: () => number
  private readonly now: () => number
  private readonly timer: NodeJS.Timeout
  private last: { at: number; bytes: number }
  /** Index in AUTO_BUFFER_SIZES of the size kept so far. */
  private kept = 0
  /** The window of PLAN being measured. */
  private window = 0
  private readonly totals = { kept: { bytes: 0, ms: 0 }, larger: { bytes: 0, ms: 0 } }
  private warm = false
  private stopped = false
  private reason = 'measuring'
  /** Each comparison adds two: the size kept, then the larger one. */
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

  /** The stream is over: what it runs at now stays (mid-comparison, possibly the larger size). */
  stop(): void {
    clearInterval(this.timer)
    this.stopped = true
    if (this.reason === 'measuring') this.reason = `the stream ended while measuring, at ${this.chunker.bufferSize / 1024} KiB`
  }

  private measure(at: number): void {
    if (this.stopped) return
    const now = { at, bytes: this.progress() }
    const moved = now.bytes - this.last.bytes
    const ms = now.at - this.last.at
    this.last = now
    if (moved === 0) return
    if (!this.warm) {
      // The first window with input holds the start (a worker, an instance, code not yet
      // optimised): measured, it made every next size look 10 % better than it was.
      this.warm = true
      this.sizeFor(PLAN[0])
      return
    }
    const side = this.totals[PLAN[this.window]!]
    side.bytes += moved
    side.ms += ms
    this.window++
    if (this.window < PLAN.length) this.sizeFor(PLAN[this.window]!)
    else this.compare()
  }

  /** Sets the chunker to the size the next window measures. */
  private sizeFor(side: (typeof PLAN)[number]): void {
    const size = AUTO_BUFFER_SIZES[side === 'kept' ? this.kept : this.kept + 1]!
    if (this.chunker.bufferSize === size || this.chunker.resize(size)) return
    this.settle(`${AUTO_BUFFER_SIZES[this.kept]! / 1024} KiB: maxRecordSize ${this.chunker.maxRecordSize} caps it`)
  }

  private compare(): void {
    const { kept, larger } = this.totals
    const keptMbps = kept.bytes / 1048.576 / kept.ms
    const largerMbps = larger.bytes / 1048.576 / larger.ms
    const size = AUTO_BUFFER_SIZES[this.kept + 1]!
    this.samples.push({ bufferSize: AUTO_BUFFER_SIZES[this.kept]!, mbps: keptMbps }, { bufferSize: size, mbps: largerMbps })
    if (largerMbps < keptMbps * MIN_GAIN) {
      this.chunker.resize(AUTO_BUFFER_SIZES[this.kept]!)
      this.settle(`${size / 1024} KiB chunks changed throughput ${Math.round((largerMbps / keptMbps - 1) * 100)} %, under ${Math.round((MIN_GAIN - 1) * 100)} %: ${this.chunker.bufferSize / 1024} KiB kept`)
      return
    }
    this.kept++
    if (this.kept + 1 >= AUTO_BUFFER_SIZES.length) {
      this.settle(`${size / 1024} KiB, the largest tried`)
      return
    }
    this.window = 0
    this.totals.kept = { bytes: 0, ms: 0 }
    this.totals.larger = { bytes: 0, ms: 0 }
    this.sizeFor(PLAN[0])
  }

  private settle(reason: string): void {
    this.reason = reason
    this.stop()
  }
}
