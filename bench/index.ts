/**
 * `npm run bench [-- --quick] [-- --filter <substring>] [-- --stable-malloc]`
 *
 * Throughput of wasmTransform against the bare wasm loop and plain Node streams, at several
 * chunk sizes, what checkpoints cost (numberer, wc; see checkpointScenarios), then the fixed
 * per-chunk cost split by layer, then WASI programs against @wasmer/wasi and node:wasi (wasi.ts;
 * `--filter wasi` for those alone), then start-up, pools and many streams (scale.ts; `--filter
 * scale`), then the CLI file to file against `tr` (file-to-file.ts; `--filter file-to-file`; run
 * before everything else, printed here). Each throughput cell is warmed up once, then run REPS
 * times interleaved with all other cells; the median is reported, and the ratio aims are measured
 * again in adjacent pairs (paired.ts). Ends with one `BENCH_JSON {...}` line for machines.
 */
import { spawnSync } from 'node:child_process'
import { parseArgs } from 'node:util'
import { formatSize, makeInput, mbps, median, repoRoot, timed, usPerChunk } from './harness.js'
import {
  checkOutput,
  checkpointScenarios,
  guestsIn,
  perChunkScenarios,
  throughputScenarios,
  type CheckpointRun,
  type Scenario,
} from './scenarios.js'
import {
  checkpointStats,
  printCheckpoints,
  printFaults,
  printFixedCost,
  printRatios,
  printThroughput,
  ratios,
  verdicts,
  AIM_SIZE,
  type Result,
} from './report.js'
import { runWasiBench, wasiCellsSelected, type WasiReport } from './wasi.js'
import { runScaleBench, type ScaleReport } from './scale.js'
import { printFileToFile, runFileToFileBench, type FileReport } from './file-to-file.js'
import { measurePair, PAIRED_AIMS, type PairedRatio } from './paired.js'

const KiB = 1024
const MiB = 1024 * KiB
const SIZES = [16 * KiB, 64 * KiB, 1 * MiB]
const CHECKPOINT_SIZES = [64 * KiB, 1 * MiB]
/**
 * Input bytes per run of a throughput cell. 256 MiB runs took 15-80 ms here and scattered by
 * ±60%. 2 GiB was steadier, but with the checkpoint cells, WASI, scale and file-to-file parts
 * the whole bench took 9 minutes; 1 GiB (0.5-1 s a run for a fast guest) keeps it near 5.
 */
const VOLUME = 1024 * MiB
/** The per-chunk table: chunks of 4 KiB, the smallest Buffer.allocUnsafe does not pool. */
const SMALL_CHUNK = 4 * KiB
const SMALL_CHUNKS = 200_000
const REPS = 3
/**
 * Pairs per ratio aim (bench/paired.ts; and the bare loop in one Transform, the floor under the
 * inline one), about 15 s for the four. The median of 12 still moved
 * from 0.70 to 0.77 (inline/bare) between runs of the pairs alone within an hour here: less
 * than the cells' reps (±0.15 between benches), not nothing.
 */
const PAIRS = 12
const WARMUP_FRACTION = 1 / 4
/**
 * glibc malloc settings for --stable-malloc: no trimming and no mmap for chunk-sized blocks, so
 * output buffers reuse already-mapped memory. Without them, whether a run page-faults on fresh
 * memory varies from run to run: it moved 64 KiB medians by ~1.5x and 1 MiB ones by 3-4x here.
 */
const STABLE_MALLOC_ENV = { MALLOC_TRIM_THRESHOLD_: String(2 ** 30), MALLOC_MMAP_THRESHOLD_: String(32 * MiB) }

interface Cell {
  readonly group: 'throughput' | 'per-chunk'
  readonly scenario: Scenario
  readonly chunkBytes: number
  readonly chunks: number
  readonly runs: number[]
  readonly faults: number[]
  /** One entry per recorded run, for scenarios that report checkpoints. */
  readonly checkpoints: CheckpointRun[]
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      filter: { type: 'string' },
      'stable-malloc': { type: 'boolean', default: false },
    },
    strict: true,
  })
  const stableMalloc = process.env.MALLOC_TRIM_THRESHOLD_ !== undefined
  if (values['stable-malloc'] && !stableMalloc) {
    // malloc reads its settings at process start: run again with them.
    const child = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, ...STABLE_MALLOC_ENV },
    })
    process.exitCode = child.status ?? 1
    return
  }
  const scale = values.quick ? 1 / 8 : 1
  const filter = values.filter
  const keep = (s: Scenario): boolean => filter === undefined || s.name.includes(filter)
  const guests = guestsIn(repoRoot())

  const cells: Cell[] = []
  const throughputCells = (scenarios: readonly Scenario[], sizes: readonly number[] = SIZES): void => {
    for (const chunkBytes of sizes) {
      for (const scenario of scenarios.filter(keep)) {
        const chunks = Math.max(1, Math.round((VOLUME * scale * (scenario.volumeScale ?? 1)) / chunkBytes))
        cells.push({ group: 'throughput', scenario, chunkBytes, chunks, runs: [], faults: [], checkpoints: [] })
      }
    }
  }
  throughputCells(throughputScenarios(guests))
  for (const scenario of perChunkScenarios(guests).filter(keep)) {
    const chunks = Math.round(SMALL_CHUNKS * scale * (scenario.volumeScale ?? 1))
    cells.push({ group: 'per-chunk', scenario, chunkBytes: SMALL_CHUNK, chunks, runs: [], faults: [], checkpoints: [] })
  }
  // Last in every rep: their fsyncs, zlib work and large snapshot buffers (GC) otherwise spill
  // into the cells run after them (bare(pass) at 64 KiB scattered ±113% instead of ±6%).
  // Not at 16 KiB: the checkpoint aim is at 64 KiB, and the bench has to stay near 5 minutes.
  throughputCells(checkpointScenarios(guests), CHECKPOINT_SIZES)
  const wasiCells = wasiCellsSelected(filter, repoRoot())
  const scaleSelected = filter === undefined || filter.startsWith('scale')
  const fileSelected = filter === undefined || filter.startsWith('file-to-file')
  if (cells.length === 0 && wasiCells.length === 0 && !scaleSelected && !fileSelected) throw new Error(`no scenario matches --filter ${JSON.stringify(filter)}`)

  console.log(
    `wasm-sandbox bench: node ${process.version}, ${values.quick ? 'quick (1/8 volume)' : 'full'}, ` +
      (cells.length === 0 ? 'WASI cells only, ' : `${formatSize(VOLUME * scale)} per throughput run, ${cells.length} cells × (1 warm-up + ${REPS} runs), `) +
      `malloc ${stableMalloc ? 'tuned (MALLOC_TRIM_THRESHOLD_ set)' : 'default'}`,
  )
  const started = Date.now()
  // The CLI as users run it, one process per command (bench/file-to-file.ts), first: run last, after
  // the rest had grown this process and worked the machine, tr took 2.9 s in two full benches
  // against 0.93 s with the row alone (the CLI 2.0 s against 1.5). Printed at the end.
  let fileReport: FileReport | undefined
  if (fileSelected) fileReport = runFileToFileBench(repoRoot(), values.quick)
  for (const cell of cells) await cell.scenario.prepare?.()

  const runCell = async (cell: Cell, chunks: number, record: boolean): Promise<void> => {
    const input = makeInput(cell.chunkBytes, chunks)
    await cell.scenario.beforeRun?.()
    const { seconds, output, pageFaults } = await timed(() => cell.scenario.run(input))
    const checkpoints = await cell.scenario.afterRun?.()
    checkOutput(cell.scenario, input, output)
    if (!record) return
    if (checkpoints) cell.checkpoints.push(checkpoints)
    // MB/s of input (for same-size transforms, input = output; the numberer and wc are not).
    cell.runs.push(mbps(cell.chunkBytes * chunks, seconds))
    cell.faults.push(pageFaults / chunks)
  }
  for (const cell of cells) await runCell(cell, Math.max(1, Math.round(cell.chunks * WARMUP_FRACTION)), false)
  for (let rep = 0; rep < REPS && cells.length > 0; rep++) {
    for (const cell of cells) await runCell(cell, cell.chunks, true)
    process.stderr.write(`  rep ${rep + 1}/${REPS} done (${((Date.now() - started) / 1000).toFixed(1)} s)\n`)
  }
  // The ratio aims again, side by side (bench/paired.ts): the verdicts are these.
  const paired: PairedRatio[] = []
  for (const aim of PAIRED_AIMS) {
    const a = cells.find((c) => c.scenario.name === aim.a && c.chunkBytes === AIM_SIZE)?.scenario
    const b = cells.find((c) => c.scenario.name === aim.b && c.chunkBytes === AIM_SIZE)?.scenario
    if (!a || !b) continue
    paired.push(await measurePair(a, b, AIM_SIZE, aim.bytes * (values.quick ? 1 / 4 : 1), values.quick ? 8 : PAIRS))
  }
  if (paired.length > 0) process.stderr.write(`  ${paired.length} ratios paired (${((Date.now() - started) / 1000).toFixed(1)} s)\n`)

  const results: Result[] = cells.map((c) => {
    const rate = median(c.runs)
    return {
      group: c.group,
      scenario: c.scenario.name,
      chunkBytes: c.chunkBytes,
      chunks: c.chunks,
      runsMBps: c.runs,
      mbps: rate,
      usPerChunk: usPerChunk(c.chunkBytes, rate),
      bestMBps: Math.max(...c.runs),
      faultsPerChunk: median(c.faults),
      ...(c.checkpoints.length > 0 ? { checkpoints: checkpointStats(c.checkpoints) } : {}),
    }
  })
  const throughput = results.filter((r) => r.group === 'throughput')
  const perChunk = results.filter((r) => r.group === 'per-chunk')
  const ratioRows = ratios(throughput, SIZES)
  const aims = verdicts(throughput, SIZES, paired)

  console.log()
  if (throughput.length > 0) printThroughput(throughput, SIZES)
  if (throughput.length > 0) printFaults(throughput, SIZES)
  if (throughput.some((r) => r.checkpoints)) printCheckpoints(throughput, SIZES)
  if (ratioRows.length > 0) printRatios(ratioRows, SIZES, aims)
  if (perChunk.length > 0) printFixedCost(perChunk)
  // WASI programs against @wasmer/wasi and node:wasi: their own cells, interleaved among themselves (bench/wasi.ts).
  let wasi: WasiReport | undefined
  if (wasiCells.length > 0) wasi = await runWasiBench(wasiCells, { quick: values.quick })
  // Start-up, pools and many streams (bench/scale.ts): after the rest, since it leaves threads behind for a moment.
  let scaleReport: ScaleReport | undefined
  if (scaleSelected) scaleReport = await runScaleBench(repoRoot(), values.quick, filter !== undefined)
  if (fileReport) printFileToFile(fileReport)
  console.log(`\ntotal ${((Date.now() - started) / 1000).toFixed(1)} s`)
  const json = {
    node: process.version,
    quick: values.quick,
    stableMalloc,
    filter: filter ?? null,
    reps: REPS,
    volumeBytes: VOLUME * scale,
    results,
    ratios: ratioRows,
    verdicts: aims,
    paired,
    wasi: wasi ?? null,
    scale: scaleReport ?? null,
    fileToFile: fileReport ?? null,
  }
  console.log(`BENCH_JSON ${JSON.stringify(json)}`)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
