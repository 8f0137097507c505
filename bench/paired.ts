/**
 * The ratio aims, measured in adjacent pairs. The throughput cells of one rep run seconds apart
 * and there are three reps: on this machine the same setting reads 830 to 2,450 MB/s from one
 * moment to the next, so a ratio of those cells moved by ±0.15 from one `npm run bench` to the
 * next (inline/bare 0.75 and 0.87; worker/inline 0.47 and 0.73). Here the two sides of an aim
 * run back to back, in AB then BA order (a steady drift cancels), many times; the verdict is the
 * median of the pairs' own ratios and the report gives their quartiles.
 */
import { makeInput, mbps, median, timed } from './harness.js'
import { BARE_IN_A_TRANSFORM, checkOutput, type Scenario } from './scenarios.js'

export interface PairedAim {
  /** The faster-is-better side measured. */
  readonly a: string
  /** What it is measured against. */
  readonly b: string
  /** Bytes per run: long enough that a stream's start is noise, short enough for many pairs. */
  readonly bytes: number
}

export interface PairedRatio {
  a: string
  b: string
  chunkBytes: number
  bytesPerRun: number
  /** a / b of each pair, in the order run. */
  ratios: number[]
  median: number
  q1: number
  q3: number
}

const MiB = 1024 * 1024

/**
 * The fast guest at 256 MiB: 0.1-0.2 s a run. `upper-scalar` (~200 MB/s) at 32 MiB: ~0.16 s.
 * The first is no aim but the floor under the inline one: the bare loop inside one Transform.
 */
export const PAIRED_AIMS: readonly PairedAim[] = [
  { a: BARE_IN_A_TRANSFORM, b: 'bare(upper)', bytes: 256 * MiB },
  { a: 'wasmTransform(upper, inline)', b: 'bare(upper)', bytes: 256 * MiB },
  { a: 'wasmTransform(upper, worker)', b: 'wasmTransform(upper, inline)', bytes: 256 * MiB },
  { a: 'wasmTransform(upper-scalar, worker)', b: 'wasmTransform(upper-scalar, inline)', bytes: 32 * MiB },
]

/** The q-quantile, interpolated between ranks as `median` does (so q = 0.5 is the median). */
function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((x, y) => x - y)
  const at = q * (sorted.length - 1)
  const below = Math.floor(at)
  const above = Math.min(below + 1, sorted.length - 1)
  return sorted[below]! + (sorted[above]! - sorted[below]!) * (at - below)
}

/** Runs `pairs` pairs of a and b at `chunkBytes`, alternating which goes first. */
export async function measurePair(a: Scenario, b: Scenario, chunkBytes: number, bytes: number, pairs: number): Promise<PairedRatio> {
  const chunks = Math.max(1, Math.round(bytes / chunkBytes))
  const rate = async (s: Scenario, n: number): Promise<number> => {
    const input = makeInput(chunkBytes, n)
    const { seconds, output } = await timed(() => s.run(input))
    checkOutput(s, input, output)
    return mbps(chunkBytes * n, seconds)
  }
  await rate(a, chunks >> 2 || 1)
  await rate(b, chunks >> 2 || 1)
  const ratios: number[] = []
  for (let i = 0; i < pairs; i++) {
    if (i % 2 === 0) {
      const x = await rate(a, chunks)
      ratios.push(x / (await rate(b, chunks)))
    } else {
      const y = await rate(b, chunks)
      ratios.push((await rate(a, chunks)) / y)
    }
  }
  return { a: a.name, b: b.name, chunkBytes, bytesPerRun: chunks * chunkBytes, ratios, median: median(ratios), q1: quantile(ratios, 0.25), q3: quantile(ratios, 0.75) }
}
