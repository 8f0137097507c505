/**
 * Derived figures and the fixed-width tables.
 */
import { formatSize } from './harness.js'

export interface Result {
  group: 'throughput' | 'per-chunk'
  scenario: string
  chunkBytes: number
  chunks: number
  runsMBps: number[]
  /** Median of runsMBps. */
  mbps: number
  /** Microseconds per chunk at the median rate. */
  usPerChunk: number
  /** Fastest run, for comparison with the median when runs scatter. */
  bestMBps: number
  /** Minor page faults per chunk, median over runs. */
  faultsPerChunk: number
}

export interface RatioRow {
  metric: string
  unit: 'x' | '%' | 'us'
  values: { chunkBytes: number; value: number }[]
}

/** Stream scenarios against the bare loop they wrap (the library's cost), and against PassThrough. */
const VS_BARE: readonly [string, string][] = [
  ['wasmTransform(upper, inline)', 'bare(upper)'],
  ['wasmTransform(pass, inline)', 'bare(pass)'],
  ['wasmTransform(upper, worker)', 'bare(upper)'],
  ['wasmTransform(pass, worker)', 'bare(pass)'],
]
/** The worker runner against the inline one, same guest: what isolation costs. */
const WORKER_VS_INLINE: readonly [string, string, string][] = [
  ['upper', 'wasmTransform(upper, worker)', 'wasmTransform(upper, inline)'],
  ['pass', 'wasmTransform(pass, worker)', 'wasmTransform(pass, inline)'],
]
const VS_PASSTHROUGH: readonly string[] = [
  'wasmTransform(upper, inline)',
  'wasmTransform(pass, inline)',
  'wasmTransform(upper, worker)',
  'wasmTransform(pass, worker)',
  'js-copy',
  'bare(pass)',
]

export function ratios(results: readonly Result[], sizes: readonly number[]): RatioRow[] {
  const find = (scenario: string, chunkBytes: number): Result | undefined =>
    results.find((r) => r.scenario === scenario && r.chunkBytes === chunkBytes)
  const row = (metric: string, unit: RatioRow['unit'], a: string, b: string, f: (x: Result, y: Result) => number): RatioRow => {
    const values: RatioRow['values'] = []
    for (const chunkBytes of sizes) {
      const x = find(a, chunkBytes)
      const y = find(b, chunkBytes)
      if (x && y) values.push({ chunkBytes, value: f(x, y) })
    }
    return { metric, unit, values }
  }
  const rows: RatioRow[] = []
  for (const [a, b] of VS_BARE) {
    rows.push(row(`${a} / ${b}`, 'x', a, b, (x, y) => x.mbps / y.mbps))
    rows.push(row(`  cost over ${b} (time)`, '%', a, b, (x, y) => (y.mbps / x.mbps - 1) * 100))
    rows.push(row(`  overhead per chunk vs ${b}`, 'us', a, b, (x, y) => x.usPerChunk - y.usPerChunk))
  }
  for (const [guest, a, b] of WORKER_VS_INLINE) {
    rows.push(row(`worker / inline (${guest})`, 'x', a, b, (x, y) => x.mbps / y.mbps))
    rows.push(row(`  worker overhead per chunk (${guest})`, 'us', a, b, (x, y) => x.usPerChunk - y.usPerChunk))
  }
  for (const a of VS_PASSTHROUGH) {
    rows.push(row(`${a} / passthrough`, 'x', a, 'passthrough', (x, y) => x.mbps / y.mbps))
  }
  return rows.filter((r) => r.values.length > 0)
}

/** An aim the bench checks, at one chunk size. */
export interface Verdict {
  aim: string
  chunkBytes: number
  value: number
  unit: RatioRow['unit']
  met: boolean
}

const AIM_SIZE = 64 * 1024

/** The aims, from the throughput results; an aim whose cells were filtered out is left out. */
export function verdicts(results: readonly Result[], sizes: readonly number[]): Verdict[] {
  const at = (a: string, b: string, f: (x: Result, y: Result) => number): number | undefined => {
    if (!sizes.includes(AIM_SIZE)) return undefined
    const x = results.find((r) => r.scenario === a && r.chunkBytes === AIM_SIZE)
    const y = results.find((r) => r.scenario === b && r.chunkBytes === AIM_SIZE)
    return x && y ? f(x, y) : undefined
  }
  const out: Verdict[] = []
  const cost = at('wasmTransform(upper, inline)', 'bare(upper)', (x, y) => (y.mbps / x.mbps - 1) * 100)
  if (cost !== undefined) {
    out.push({
      aim: '< 10% cost of wasmTransform(upper, inline) over bare(upper) at 64 KiB',
      chunkBytes: AIM_SIZE,
      value: cost,
      unit: '%',
      met: cost < 10,
    })
  }
  const worker = at('wasmTransform(upper, worker)', 'wasmTransform(upper, inline)', (x, y) => x.mbps / y.mbps)
  if (worker !== undefined) {
    out.push({
      aim: 'wasmTransform(upper, worker) >= 0.85x inline at 64 KiB',
      chunkBytes: AIM_SIZE,
      value: worker,
      unit: 'x',
      met: worker >= 0.85,
    })
  }
  return out
}

const pad = (s: string, w: number): string => s.padStart(w)
const padEnd = (s: string, w: number): string => s.padEnd(w)
const spread = (r: Result): number => ((Math.max(...r.runsMBps) - Math.min(...r.runsMBps)) / r.mbps) * 100

export function printThroughput(results: readonly Result[], sizes: readonly number[]): void {
  const names = [...new Set(results.map((r) => r.scenario))]
  const N = Math.max(24, ...names.map((n) => n.length + 2))
  const W = 20
  console.log('Throughput: MB/s of input (MB = 1e6 B), median of runs, (spread = (max-min)/median)')
  console.log(padEnd('scenario', N) + sizes.map((s) => pad(formatSize(s), W)).join(''))
  for (const name of names) {
    let line = padEnd(name, N)
    for (const chunkBytes of sizes) {
      const r = results.find((x) => x.scenario === name && x.chunkBytes === chunkBytes)
      line += pad(r ? `${r.mbps.toFixed(0)} (±${spread(r).toFixed(0)}%)` : '-', W)
    }
    console.log(line)
  }
  console.log()
}

export function printFaults(results: readonly Result[], sizes: readonly number[]): void {
  const names = [...new Set(results.map((r) => r.scenario))]
  const N = Math.max(24, ...names.map((n) => n.length + 2))
  const W = 12
  console.log('Minor page faults per chunk (median): fresh memory behind output buffers, the main noise source')
  console.log(padEnd('scenario', N) + sizes.map((s) => pad(formatSize(s), W)).join(''))
  for (const name of names) {
    let line = padEnd(name, N)
    for (const chunkBytes of sizes) {
      const r = results.find((x) => x.scenario === name && x.chunkBytes === chunkBytes)
      line += pad(r ? r.faultsPerChunk.toFixed(1) : '-', W)
    }
    console.log(line)
  }
  console.log()
}

function formatValue(value: number, unit: RatioRow['unit']): string {
  if (unit === 'x') return value.toFixed(3)
  if (unit === '%') return `${value >= 0 ? '+' : ''}${value.toFixed(1)}%`
  return `${value.toFixed(2)} µs`
}

export function printRatios(rows: readonly RatioRow[], sizes: readonly number[], aims: readonly Verdict[]): void {
  const W = 14
  const M = Math.max(44, ...rows.map((r) => r.metric.length + 2))
  console.log('Ratios (MB/s over MB/s), cost = t_stream/t_bare - 1, overhead = µs/chunk stream - bare (or - inline)')
  console.log(padEnd('metric', M) + sizes.map((s) => pad(formatSize(s), W)).join(''))
  for (const row of rows) {
    let line = padEnd(row.metric, M)
    for (const chunkBytes of sizes) {
      const v = row.values.find((x) => x.chunkBytes === chunkBytes)
      line += pad(v ? formatValue(v.value, row.unit) : '-', W)
    }
    console.log(line)
  }
  for (const v of aims) {
    console.log(`target (${v.aim}): ${v.met ? 'met' : 'NOT met'}, ${formatValue(v.value, v.unit)}`)
  }
  console.log()
}

export function printFixedCost(results: readonly Result[]): void {
  const chunk = formatSize(results[0]!.chunkBytes)
  const direct = results.find((r) => r.scenario === 'chunk:direct')
  console.log(`Fixed per-chunk cost: ${chunk} chunks (bytes cost ~nothing), µs/chunk at median rate`)
  const N = Math.max(32, ...results.map((r) => r.scenario.length + 2))
  console.log(padEnd('scenario', N) + pad('MB/s', 10) + pad('µs/chunk', 12) + pad('Δ vs direct', 14) + pad('spread', 9))
  for (const r of results) {
    const delta = direct ? `${(r.usPerChunk - direct.usPerChunk).toFixed(2)}` : '-'
    console.log(
      padEnd(r.scenario, N) +
        pad(r.mbps.toFixed(0), 10) +
        pad(r.usPerChunk.toFixed(2), 12) +
        pad(r.scenario === 'chunk:bare(pass)' ? '(no stream)' : delta, 14) +
        pad(`±${spread(r).toFixed(0)}%`, 9),
    )
  }
}
