/**
 * Scale on one machine (issue 10), `npm run bench -- --filter scale`: what a stream's start
 * costs under the default isolation with warm workers against a new thread per stream (the old
 * behaviour, a fresh pool each time) and against inline; a pool of instances against one for a
 * CPU-heavy stateless guest; many concurrent short streams with and without `maxWorkers`; and
 * what one worker costs. Ratios are against baselines measured in the same run.
 */
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createSandbox, wasmTransform, type SandboxOptions } from '../lib/index.js'
import { createSandboxStream } from '../lib/compose.js'
import { resolveOptions } from '../lib/options.js'
import { WorkerPool } from '../lib/runners/worker-pool.js'
import { median } from './harness.js'
import { AUTO_BUFFER_SIZES } from '../lib/options.js'
import { BareThreads } from './bare-threads.js'

const AUTO_SIZES: readonly number[] = AUTO_BUFFER_SIZES

const KiB = 1024
const MiB = 1024 * KiB

/**
 * 'auto' against each fixed setting, one workload: MB/s for each (median of the rounds), and
 * auto's ratio to the best, the median of that ratio within each round.
 */
interface AutoRow {
  workload: string
  fixed: Array<{ setting: string; mbps: number }>
  auto: number
  ratioToBest: number
  /** The same, medians over medians: what the rounds' drift does to it. */
  ratioOfMedians: number
}

/** Seconds for one stream of `input`, written in pieces of `piece` bytes. */
async function secondsFor(module: Buffer | string, options: SandboxOptions, input: Buffer, piece: number): Promise<number> {
  const started = performance.now()
  const pieces = (function* () {
    for (let at = 0; at < input.length; at += piece) yield input.subarray(at, at + piece)
  })()
  await pipeline(Readable.from(pieces), wasmTransform(module, options), sink())
  return (performance.now() - started) / 1000
}

/**
 * Seconds under each setting, `rounds` rounds of one run of each taken in turn: this machine
 * drifts by tens of percent within a minute, and runs of one setting taken together would
 * compare one moment with another. Each round starts one setting further on, so no setting
 * always runs right after the same one (and its idle workers). `seconds[setting][round]`.
 */
async function roundsOf(runs: ReadonlyArray<() => Promise<number>>, rounds: number): Promise<number[][]> {
  const seconds: number[][] = runs.map(() => [])
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < runs.length; k++) {
      const i = (round + k) % runs.length
      seconds[i]!.push(await runs[i]!())
    }
  }
  return seconds
}

/**
 * How many times faster `x` ran than `base`, from runs paired by round: the median of the
 * rounds' ratios. Each round's runs are seconds apart, so a drift that moves both cancels out,
 * which a ratio of medians taken minutes apart does not do.
 */
function pairedSpeedup(x: readonly number[], base: readonly number[]): number {
  return median(x.map((seconds, round) => base[round]! / seconds))
}

const ROUNDS = 5

export async function autoVersusFixed(root: string, quick: boolean): Promise<AutoRow[]> {
  const scale = quick ? 1 / 4 : 1
  // 1 GiB, under a second at this guest's speed: the tuner measures a window at each size
  // after one for the start (50 ms each), which on 256 MiB (0.2 s) was nearly the whole stream.
  const text = Buffer.alloc(Math.round(1024 * MiB * scale), 'abcdefgh ERROR line\n')
  const workloads: Array<{ workload: string; module: Buffer | string; input: Buffer; base: SandboxOptions; fixed: Array<[string, SandboxOptions]>; auto: SandboxOptions }> = [
    {
      workload: 'fast guest (upper), chunk size',
      module: join(root, 'examples', 'upper.wasm'),
      input: text,
      base: {},
      fixed: AUTO_SIZES.map((size) => [`${size / KiB} KiB`, { bufferSize: size }]),
      auto: { bufferSize: 'auto' },
    },
    {
      workload: 'slow stateless guest (jitter), instances',
      module: readFileSync(join(root, 'spec', 'fixtures', 'jitter.wasm')),
      input: Buffer.alloc(Math.round(300 * scale) * 4 * KiB, '7'),
      base: { bufferSize: 4 * KiB, stateless: true, limits: { timeout: 30_000 } },
      fixed: [1, 2, 4].map((n) => [`${n} instance${n > 1 ? 's' : ''}`, { maxConcurrency: n }]),
      auto: { maxConcurrency: 'auto' },
    },
    {
      workload: 'WASI filter per record (grep), instances',
      module: join(root, 'examples', 'wasi', 'grep.wasm'),
      // A run per 200-byte line, about 10,000 runs a second on one instance: 4 MiB is about a second.
      input: Buffer.alloc(Math.round(4 * MiB * scale), `${'x'.repeat(93)} ERROR ${'y'.repeat(99)}\n`),
      base: { delimiter: '\n', bufferSize: 4 * KiB, wasi: { mode: 'record', args: ['grep', 'ERROR'] } },
      fixed: [1, 2, 4].map((n) => [`${n} instance${n > 1 ? 's' : ''}`, { maxConcurrency: n }]),
      auto: { maxConcurrency: 'auto' },
    },
  ]
  const rows: AutoRow[] = []
  for (const w of workloads) {
    const settings = [...w.fixed.map(([, options]) => ({ ...w.base, ...options })), { ...w.base, ...w.auto }]
    const seconds = await roundsOf(
      settings.map((options) => () => secondsFor(w.module, options, w.input, MiB)),
      quick ? 3 : ROUNDS,
    )
    const rates = seconds.map((s) => w.input.length / MiB / median(s))
    const autoSeconds = seconds.pop()!
    const auto = rates.pop()!
    const fixed: AutoRow['fixed'] = w.fixed.map(([setting], i) => ({ setting, mbps: rates[i]! }))
    // The best fixed setting by its median; auto is then compared with it round by round.
    const best = rates.indexOf(Math.max(...rates))
    rows.push({ workload: w.workload, fixed, auto, ratioToBest: pairedSpeedup(autoSeconds, seconds[best]!), ratioOfMedians: auto / rates[best]! })
  }
  return rows
}

export interface ScaleReport {
  auto: AutoRow[]
  startup: Array<{ size: number; mode: string; concurrent: number; msPerStream: number }>
  /** Ratios are paired by round (pairedSpeedup); `bare` is the machine's own ceiling. */
  pool: { instances: Array<{ instances: number; mbps: number; ratio: number }>; bare: { one: number; two: number; ratio: number } }
  crowd: Array<{ label: string; streams: number; wallMs: number; peakRssMb: number; rssGrowthMb: number; maxLive: number }>
  worker: { startMs: number; rssMb: number }
}

function sink(): Writable {
  return new Writable({ write: (_c, _e, cb) => cb() })
}

type Mode = 'inline' | 'worker (warm)' | 'worker (new thread)'

/** One stream of `input` through upper in `mode`; resolves when its output has all been read. */
async function oneStream(module: Buffer, input: Buffer, mode: Mode): Promise<void> {
  const options: SandboxOptions = { isolation: mode === 'inline' ? 'inline' : 'worker' }
  if (mode === 'worker (new thread)') {
    const pool = new WorkerPool()
    await pipeline(Readable.from([input]), createSandboxStream(module, resolveOptions(options), pool) as never, sink())
    pool.close()
    return
  }
  await pipeline(Readable.from([input]), wasmTransform(module, options), sink())
}

async function startup(root: string, quick: boolean): Promise<ScaleReport['startup']> {
  const module = readFileSync(join(root, 'examples', 'upper.wasm'))
  const rows: ScaleReport['startup'] = []
  const sizes = quick ? [KiB, MiB] : [KiB, MiB, 8 * MiB]
  const modes: Mode[] = ['inline', 'worker (warm)', 'worker (new thread)']
  for (const size of sizes) {
    const input = Buffer.alloc(size, 'abcdefgh')
    const sequential = size >= 8 * MiB ? 8 : quick ? 10 : 30
    for (const mode of modes) {
      await oneStream(module, input, mode) // warm-up: compile, first thread
      const times: number[] = []
      for (let i = 0; i < sequential; i++) {
        const started = performance.now()
        await oneStream(module, input, mode)
        times.push(performance.now() - started)
      }
      rows.push({ size, mode, concurrent: 1, msPerStream: median(times) })
      const together = size >= 8 * MiB ? 10 : 50
      const started = performance.now()
      await Promise.all(Array.from({ length: together }, () => oneStream(module, input, mode)))
      rows.push({ size, mode, concurrent: together, msPerStream: (performance.now() - started) / together })
    }
  }
  return rows
}

/**
 * A CPU-heavy stateless guest: jitter with every chunk at its longest spin (about 7 M
 * iterations), on a pool of 1, 2 and 4 instances, and the same calls on 1 and 2 bare threads
 * (bare-threads.ts): what two cores give this guest with no library at all.
 */
async function poolScaling(root: string, quick: boolean): Promise<ScaleReport['pool']> {
  const bytes = readFileSync(join(root, 'spec', 'fixtures', 'jitter.wasm'))
  const module = new WebAssembly.Module(bytes)
  const chunk = 4 * KiB
  const chunks = quick ? 60 : 200
  const input = Buffer.alloc(chunks * chunk, '7')
  const counts = [1, 2, 4]
  const settings = counts.map((instances): SandboxOptions => ({ bufferSize: chunk, maxConcurrency: instances, stateless: true, limits: { timeout: 30_000 } }))
  const bare = new BareThreads(2)
  try {
    for (const options of settings) await secondsFor(bytes, options, input.subarray(0, 8 * chunk), input.length)
    for (const n of [1, 2]) await bare.seconds(module, n, 8, chunk, 0x37)
    const seconds = await roundsOf(
      [
        ...settings.map((options) => () => secondsFor(bytes, options, input, input.length)),
        ...[1, 2].map((n) => () => bare.seconds(module, n, chunks, chunk, 0x37)),
      ],
      quick ? 3 : ROUNDS,
    )
    const [bare1, bare2] = seconds.splice(counts.length, 2) as [number[], number[]]
    const rate = (s: readonly number[]): number => input.length / MiB / median(s)
    return {
      instances: counts.map((instances, i) => ({ instances, mbps: rate(seconds[i]!), ratio: pairedSpeedup(seconds[i]!, seconds[0]!) })),
      bare: { one: rate(bare1), two: rate(bare2), ratio: pairedSpeedup(bare2, bare1) },
    }
  } finally {
    await bare.close()
  }
}

/** `streams` short calls at once through one sandbox: wall time, peak RSS, most workers alive. */
async function crowd(root: string, streams: number, maxWorkers: number | undefined, label: string): Promise<ScaleReport['crowd'][number]> {
  const module = join(root, 'examples', 'upper.wasm')
  const sandbox = createSandbox(maxWorkers === undefined ? {} : { maxWorkers })
  const before = process.memoryUsage().rss
  let peak = before
  let maxLive = 0
  const sample = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss)
    maxLive = Math.max(maxLive, sandbox.workers().live)
  }, 5)
  const input = Buffer.alloc(KiB, 'x')
  const started = performance.now()
  await Promise.all(Array.from({ length: streams }, () => sandbox.call(module, input)))
  const wallMs = performance.now() - started
  clearInterval(sample)
  sandbox.close()
  await new Promise((resolve) => setTimeout(resolve, 300))
  return { label, streams, wallMs, peakRssMb: peak / MiB, rssGrowthMb: (peak - before) / MiB, maxLive }
}

/** One worker: time from asking to a started guest, and resident memory per idle worker. */
async function workerCost(root: string): Promise<ScaleReport['worker']> {
  const module = readFileSync(join(root, 'examples', 'upper.wasm'))
  const times: number[] = []
  for (let i = 0; i < 10; i++) {
    const started = performance.now()
    await oneStream(module, Buffer.from('x'), 'worker (new thread)')
    times.push(performance.now() - started)
  }
  const sandbox = createSandbox({ maxWorkers: 16 })
  global.gc?.()
  await new Promise((resolve) => setTimeout(resolve, 200))
  const before = process.memoryUsage().rss
  // Held open, so each keeps its worker: short calls would share a few warm ones.
  const streams = Array.from({ length: 16 }, () => sandbox.createStreamProcessor(module).stream())
  const outputs = streams.map((stream) => new Promise((resolve) => stream.once('data', resolve)))
  for (const stream of streams) stream.write('x')
  await Promise.all(outputs)
  await new Promise((resolve) => setTimeout(resolve, 200))
  const rss = (process.memoryUsage().rss - before) / sandbox.workers().live / MiB
  const ended = Promise.all(streams.map((stream) => pipeline(stream, sink())))
  for (const stream of streams) stream.end()
  await ended
  sandbox.close()
  return { startMs: median(times), rssMb: rss }
}

/**
 * `unbounded` adds the 1,000 streams on 1,000 threads: about a minute on its own, so only
 * `--filter scale` runs it, to keep the whole bench near 5 minutes.
 */
export async function runScaleBench(root: string, quick: boolean, unbounded: boolean): Promise<ScaleReport> {
  console.log('\nScale: stream start-up (upper), ms per stream; ratios against inline in the same run')
  const rows = await startup(root, quick)
  for (const row of rows) {
    const inline = rows.find((r) => r.size === row.size && r.concurrent === row.concurrent && r.mode === 'inline')!
    console.log(
      `  ${String(row.size / KiB).padStart(5)} KiB  ${row.concurrent === 1 ? 'sequential' : `${row.concurrent} at once`.padEnd(10)}  ${row.mode.padEnd(20)} ${row.msPerStream.toFixed(2).padStart(8)} ms  ${(row.msPerStream / inline.msPerStream).toFixed(2)}× inline`,
    )
  }
  console.log(`\nScale: a CPU-heavy stateless guest (jitter, ~5 ms a 4 KiB chunk) on a pool of instances; ${quick ? 3 : ROUNDS} rounds, ratios the median of each round's`)
  const pool = await poolScaling(root, quick)
  for (const row of pool.instances) console.log(`  maxConcurrency ${row.instances}: ${row.mbps.toFixed(2)} MB/s, ${row.ratio.toFixed(2)}× one instance`)
  const two = pool.instances.find((row) => row.instances === 2)!
  console.log(`  aim: 2 instances >= 1.8× one: ${two.ratio >= 1.8 ? 'met' : 'NOT met'}, ${two.ratio.toFixed(2)}×`)
  console.log(
    `  the same calls on bare threads, no library: 1 thread ${pool.bare.one.toFixed(2)} MB/s, 2 threads ${pool.bare.two.toFixed(2)} MB/s = ${pool.bare.ratio.toFixed(2)}× ` +
      `(this machine's ceiling for the pool of 2, which reached ${(two.ratio / pool.bare.ratio).toFixed(2)} of it)`,
  )
  console.log('\nScale: short streams (1 KiB through upper) all at once through one sandbox')
  const count = quick ? 200 : 1000
  // The default's factor (WORKERS_PER_CORE) was chosen from these rows: 1, 2, 4 and 8 per core.
  const cores = availableParallelism()
  const crowdRows = [await crowd(root, count, undefined, `default (${cores * 4})`)]
  for (const perCore of [1, 2, 8]) crowdRows.push(await crowd(root, count, cores * perCore, `maxWorkers ${cores * perCore}`))
  if (unbounded) crowdRows.push(await crowd(root, count, Infinity, 'maxWorkers: Infinity'))
  for (const row of crowdRows) {
    console.log(`  ${row.streams} streams, ${row.label.padEnd(20)} ${row.wallMs.toFixed(0).padStart(6)} ms wall, peak RSS ${row.peakRssMb.toFixed(0)} MB (+${row.rssGrowthMb.toFixed(0)} MB over the RSS before), at most ${row.maxLive} workers`)
  }
  if (!unbounded) console.log('  (without a bound, a thread per stream: npm run bench -- --filter scale)')
  const worker = await workerCost(root)
  console.log(`\nOne worker: ${worker.startMs.toFixed(1)} ms for a 1-byte stream on a new thread (median of 10), about ${worker.rssMb.toFixed(1)} MB RSS each (16 running)`)
  console.log(`\n'auto' against the fixed settings (MB/s, medians of ${quick ? 3 : ROUNDS} rounds; aim: within 10 % of the best, paired by round)`)
  const auto = await autoVersusFixed(root, quick)
  for (const row of auto) {
    console.log(
      `  ${row.workload}: ${row.fixed.map((f) => `${f.setting} ${f.mbps.toFixed(2)}`).join(', ')}; auto ${row.auto.toFixed(2)} = ` +
        `${row.ratioToBest.toFixed(2)}× the best (${row.ratioOfMedians.toFixed(2)}× medians over medians): ${row.ratioToBest >= 0.9 ? 'met' : 'NOT met'}`,
    )
  }
  return { startup: rows, pool, crowd: crowdRows, worker, auto }
}
