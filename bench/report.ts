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
  ['wasmTransform(upper)', 'bare(upper)'],
  ['wasmTransform(pass)', 'bare(pass)'],
]
const VS_PASSTHROUGH: readonly string[] = ['wasmTransform(upper)', 'wasmTransform(pass)', 'js-copy', 'bare(pass)']

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
  for (const a of VS_PASSTHROUGH) {
    rows.push(row(`${a} / passthrough`, 'x', a, 'passthrough', (x, y) => x.mbps / y.mbps))
  }
  return rows.filter((r) => r.values.length > 0)
}

const pad = (s: string, w: number): string => s.padStart(w)
const padEnd = (s: string, w: number): string => s.padEnd(w)
const spread = (r: Result): number => ((Math.max(...r.runsMBps) - Math.min(...r.runsMBps)) / r.mbps) * 100

export function printThroughput(results: readonly Result[], sizes: readonly number[]): void {
  const names = [...new Set(results.map((r) => r.scenario))]
  const W = 20
  console.log('Throughput: MB/s of input (MB = 1e6 B), median of runs, (spread = (max-min)/median)')
  console.log(padEnd('scenario', 24) + sizes.map((s) => pad(formatSize(s), W)).join(''))
  for (const name of names) {
    let line = padEnd(name, 24)
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
  const W = 12
  console.log('Minor page faults per chunk (median): fresh memory behind output buffers, the main noise source')
  console.log(padEnd('scenario', 24) + sizes.map((s) => pad(formatSize(s), W)).join(''))
  for (const name of names) {
    let line = padEnd(name, 24)
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

export function printRatios(rows: readonly RatioRow[], sizes: readonly number[]): void {
  const W = 14
  console.log('Ratios (MB/s over MB/s), cost = t_stream/t_bare - 1, overhead = µs/chunk stream - bare')
  console.log(padEnd('metric', 44) + sizes.map((s) => pad(formatSize(s), W)).join(''))
  for (const row of rows) {
    let line = padEnd(row.metric, 44)
    for (const chunkBytes of sizes) {
      const v = row.values.find((x) => x.chunkBytes === chunkBytes)
      line += pad(v ? formatValue(v.value, row.unit) : '-', W)
    }
    console.log(line)
  }
  const target = rows.find((r) => r.metric === '  cost over bare(upper) (time)')?.values.find((v) => v.chunkBytes === 64 * 1024)
  if (target) {
    const verdict = target.value < 10 ? 'met' : 'NOT met'
    console.log(`target (< 10% cost over bare(upper) at 64 KiB): ${verdict}, ${formatValue(target.value, '%')}`)
  }
  console.log()
}

export function printFixedCost(results: readonly Result[]): void {
  const chunk = formatSize(results[0]!.chunkBytes)
  const direct = results.find((r) => r.scenario === 'chunk:direct')
  console.log(`Fixed per-chunk cost: ${chunk} chunks (bytes cost ~nothing), µs/chunk at median rate`)
  console.log(padEnd('scenario', 32) + pad('MB/s', 10) + pad('µs/chunk', 12) + pad('Δ vs direct', 14) + pad('spread', 9))
  for (const r of results) {
    const delta = direct ? `${(r.usPerChunk - direct.usPerChunk).toFixed(2)}` : '-'
    console.log(
      padEnd(r.scenario, 32) +
        pad(r.mbps.toFixed(0), 10) +
        pad(r.usPerChunk.toFixed(2), 12) +
        pad(r.scenario === 'chunk:bare(pass)' ? '(no stream)' : delta, 14) +
        pad(`±${spread(r).toFixed(0)}%`, 9),
    )
  }
}
