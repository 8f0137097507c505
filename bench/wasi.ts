/**
 * WASI command programs (examples/wasi/) through wasmTransform, against the other ways to run the
 * same .wasm on Node, all in this process, reps interleaved, medians reported:
 *
 * - Whole stream, `cat` and `upper` (64 KiB read/write loops): `wasmTransform(prog)` (default
 *   worker, stdin read as it arrives) into a null sink; against @wasmer/wasi used as its README
 *   shows (the input collected from the stream and concatenated, setStdinBuffer, start,
 *   getStdoutBuffer), and node:wasi over file descriptors (the input written from the stream to a
 *   temp file, stdin and stdout on files, in /dev/shm when there is one). Getting the input out of
 *   the stream is inside every figure; node:wasi is also shown without it ("run only").
 * - Per record, `grep x` over short lines: wasmTransform with `wasi: { mode: 'record' }` and
 *   `delimiter: '\n'`, against a main-thread loop making a fresh @wasmer/wasi WASI + instance per
 *   line. A record run takes a *chunk* of whole records (up to bufferSize), so the one-run-per-line
 *   cell sets bufferSize below two lines; the default-bufferSize cell shows what batching gives.
 *
 * Compiling the module and @wasmer/wasi's `init()` are outside the baselines' timed regions;
 * wasmTransform is given the path, as a user would, and loads it inside its own.
 * node:wasi is a baseline only (it is no sandbox); lib/ never uses it.
 */
import { closeSync, createWriteStream, existsSync, openSync, readSync, statSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { init as initWasmer, WASI as WasmerWASI } from '@wasmer/wasi'
import { wasmTransform } from '../lib/index.js'
import { HEAD_BYTES, formatSize, makeInput, median, runPipeline, source, type Input, type Output } from './harness.js'

const KiB = 1024
const MiB = 1024 * KiB
/**
 * Bytes per whole-stream run: wasmer's README way runs at ~20-100 MB/s, so it sets the budget.
 * Not less: that way buffers everything, so it runs faster on less (78 MB/s for `upper` on
 * 128 MiB against 54 on 256), and the aims were set at this size.
 */
const STREAM_VOLUME = 256 * MiB
const STREAM_CHUNK = 64 * KiB
/**
 * Lines per per-record run (1/5 with --quick): each line is a program run of ~0.4-1.5 ms of CPU
 * for both wasmTransform and the wasmer loop (fresh @wasmer/wasi WASI + instance either way), so
 * 20k lines would take the WASI part past a minute on its own.
 */
const RECORD_LINES = 4000
/** Lines of 36-44 bytes ('\n' included): a 64-byte window never holds two, so one record per run. */
const LINE_MIN = 36
const LINE_MAX = 44
const ONE_RECORD_BUFFER = 64
const PATTERN = 'x'
const REPS = 3
const WARMUP_FRACTION = 1 / 4

export interface WasiBenchOptions {
  /** 1/8 of the bytes, 1/5 of the lines. */
  quick: boolean
}

/** One timed run of a cell. */
interface Sample {
  seconds: number
  /** Input bytes (stream cells) or records (record cells). */
  units: number
  /** Program runs (`_start` calls). */
  runs: number
  /** CPU time of the whole process (every thread: the worker's too) over the same span. */
  cpuSeconds: number
  /** Parts of `seconds`, by name. */
  phases: Record<string, number>
}

export interface WasiCell {
  /** The comparison set: a cell runs only with the rest of its group, so every ratio has both sides. */
  readonly group: 'cat' | 'upper' | 'grep'
  readonly name: string
  readonly kind: 'stream' | 'record'
  prepare?(): Promise<void>
  /** Runs over `size` bytes (stream) or lines (record); throws if the output is wrong. */
  run(size: number): Promise<Sample>
  cleanup?(): Promise<void>
  readonly samples: Sample[]
}

export interface WasiCellResult {
  group: string
  name: string
  kind: 'stream' | 'record'
  /** MB/s (stream) or records/s (record), per recorded run. */
  rates: number[]
  rate: number
  runsPerSecond: number
  recordsPerRun: number
  /** Medians over runs, seconds. */
  phases: Record<string, number>
  /** The rate per CPU-second of the process (all threads), median of runs: steadier than `rate` on a busy machine. */
  cpuRate: number
  /** CPU microseconds per program run (all threads), median of runs. */
  cpuUsPerRun: number
  /** Stream cells with a `run` phase (node:wasi): MB/s of that phase alone, median of runs. */
  runPhaseMBps?: number
}

export interface WasiRatio {
  metric: string
  value: number
  /** The aim, as a minimum ratio; undefined for ratios shown for information. */
  aim: number | undefined
  met: boolean | undefined
}

export interface WasiReport {
  streamVolumeBytes: number
  recordLines: number
  reps: number
  /** At the start and at the end of the WASI part. */
  loadAverage: { start: number[]; end: number[] }
  cores: number
  seconds: number
  cells: WasiCellResult[]
  ratios: WasiRatio[]
}

const now = (): number => performance.now() / 1000
/** Process CPU seconds, all threads: under load, wall time also measures waiting for a core. */
const cpuNow = (): number => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

/** The cells whose group matches `filter` (any cell's name, or the group's), or all without one. */
export function wasiCellsSelected(filter: string | undefined, root: string): WasiCell[] {
  const all = wasiCells(root)
  if (filter === undefined) return all
  const groups = new Set(all.filter((c) => c.name.includes(filter) || `wasi:${c.group}`.includes(filter)).map((c) => c.group))
  return all.filter((c) => groups.has(c.group))
}

function wasiCells(root: string): WasiCell[] {
  const at = (name: string): string => join(root, 'examples', 'wasi', `${name}.wasm`)
  const compiled = new Map<string, WebAssembly.Module>()
  const compile = async (name: string): Promise<WebAssembly.Module> => {
    let m = compiled.get(name)
    if (!m) compiled.set(name, (m = await WebAssembly.compile(await readFile(at(name)))))
    return m
  }
  const tempDir = sharedTempDir()
  const cells: WasiCell[] = []
  for (const [program, upper] of [['cat', false], ['upper', true]] as const) {
    const check = (input: Input, output: Output, name: string): void => checkStream(input, output, upper, name)
    cells.push(streamWasmTransform(program, at(program), check))
    cells.push(streamWasmer(program, () => compile(program), check))
    cells.push(streamNodeWasi(program, () => compile(program), tempDir, check))
  }
  const lines = new LineInputs()
  cells.push(recordWasmTransform('grep', at('grep'), lines, ONE_RECORD_BUFFER, '1 record/run'))
  cells.push(recordWasmTransform('grep', at('grep'), lines, undefined, '64 KiB chunks, a run per record'))
  cells.push(recordWasmer('grep', () => compile('grep'), lines))
  return cells
}

function cellName(group: string, what: string): string {
  return `wasi:${group} ${what}`
}

// ---------------------------------------------------------------------------------------------
// Whole stream

function checkStream(input: Input, output: Output, upper: boolean, name: string): void {
  const bytes = input.chunkBytes * input.chunks
  const first = input.pool[0]!.subarray(0, HEAD_BYTES)
  const head = upper ? Buffer.from(first.toString('latin1').toUpperCase(), 'latin1') : first
  if (output.bytes !== bytes) throw new Error(`${name}: ${output.bytes} bytes out, expected ${bytes}`)
  if (!output.head?.equals(head)) throw new Error(`${name}: wrong output: ${JSON.stringify(output.head?.toString('latin1'))}`)
}

type StreamCheck = (input: Input, output: Output, name: string) => void

function streamInput(bytes: number): Input {
  return makeInput(STREAM_CHUNK, Math.max(1, Math.round(bytes / STREAM_CHUNK)))
}

function streamWasmTransform(program: string, path: string, check: StreamCheck): WasiCell {
  const name = cellName(program, 'wasmTransform (worker)')
  return {
    group: program as WasiCell['group'],
    name,
    kind: 'stream',
    samples: [],
    async run(bytes) {
      const input = streamInput(bytes)
      const [start, cpu] = [now(), cpuNow()]
      const output = await runPipeline(input, [wasmTransform(path)])
      const [seconds, cpuSeconds] = [now() - start, cpuNow() - cpu]
      check(input, output, name)
      return { seconds, cpuSeconds, units: input.chunkBytes * input.chunks, runs: 1, phases: {} }
    },
  }
}

/** Collects a stream's chunks (references: the source never reuses a buffer while it is held). */
async function collect(input: Input): Promise<Buffer> {
  const chunks: Buffer[] = []
  await pipeline(
    source(input),
    new Writable({
      highWaterMark: input.chunkBytes,
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk)
        callback()
      },
    }),
  )
  return Buffer.concat(chunks)
}

/** @wasmer/wasi as its README shows it: whole stdin in, run, whole stdout out. */
function streamWasmer(program: string, module: () => Promise<WebAssembly.Module>, check: StreamCheck): WasiCell {
  const name = cellName(program, '@wasmer/wasi (README: buffer all, start)')
  let mod: WebAssembly.Module | undefined
  return {
    group: program as WasiCell['group'],
    name,
    kind: 'stream',
    samples: [],
    async prepare() {
      await initWasmer()
      mod = await module()
    },
    async run(bytes) {
      const input = streamInput(bytes)
      const [t0, cpu] = [now(), cpuNow()]
      const whole = await collect(input)
      const t1 = now()
      const wasi = new WasmerWASI({ env: {}, args: [program] })
      let out: Uint8Array
      let t2: number
      try {
        const instance = wasi.instantiate(mod!, {})
        wasi.setStdinBuffer(whole)
        const code = wasi.start(instance)
        if (code !== 0) throw new Error(`${name}: exit code ${code}`)
        t2 = now()
        out = wasi.getStdoutBuffer()
      } finally {
        wasi.free()
      }
      const [t3, cpuSeconds] = [now(), cpuNow() - cpu]
      check(input, { bytes: out.length, head: Buffer.from(out.subarray(0, HEAD_BYTES)) }, name)
      return {
        seconds: t3 - t0,
        cpuSeconds,
        units: whole.length,
        runs: 1,
        phases: { 'collect input': t1 - t0, 'stdin + run': t2 - t1, 'read stdout': t3 - t2 },
      }
    },
  }
}

/** A temp directory for node:wasi's files, made on first use: in /dev/shm (tmpfs) if there is one. */
function sharedTempDir(): { path(): Promise<string>; remove(): Promise<void> } {
  let dir: Promise<string> | undefined
  return {
    path: () => (dir ??= mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'wasm-sandbox-bench-wasi-'))),
    async remove() {
      if (dir === undefined) return
      const d = await dir
      dir = undefined
      await rm(d, { recursive: true, force: true })
    },
  }
}

type NodeWasiClass = typeof import('node:wasi').WASI

/** node:wasi over fds: the stream written to a temp file, that file as stdin, a file as stdout. */
function streamNodeWasi(
  program: string,
  module: () => Promise<WebAssembly.Module>,
  temp: ReturnType<typeof sharedTempDir>,
  check: StreamCheck,
): WasiCell {
  const name = cellName(program, 'node:wasi (fds, input via temp file)')
  let mod: WebAssembly.Module | undefined
  let NodeWASI: NodeWasiClass | undefined
  let dir = ''
  return {
    group: program as WasiCell['group'],
    name,
    kind: 'stream',
    samples: [],
    async prepare() {
      // Imported here, not at the top: it warns (ExperimentalWarning) as soon as it is loaded.
      NodeWASI = (await import('node:wasi')).WASI
      mod = await module()
      dir = await temp.path()
    },
    async run(bytes) {
      const input = streamInput(bytes)
      const inPath = join(dir, `${program}.in`)
      const outPath = join(dir, `${program}.out`)
      const [t0, cpu] = [now(), cpuNow()]
      await pipeline(source(input), createWriteStream(inPath, { highWaterMark: input.chunkBytes }))
      const t1 = now()
      const stdin = openSync(inPath, 'r')
      const stdout = openSync(outPath, 'w')
      try {
        const wasi = new NodeWASI!({ version: 'preview1', args: [program], stdin, stdout, returnOnExit: true })
        const instance = new WebAssembly.Instance(mod!, wasi.getImportObject() as WebAssembly.Imports)
        const code = wasi.start(instance)
        if (code !== 0) throw new Error(`${name}: exit code ${code}`)
      } finally {
        closeSync(stdin)
        closeSync(stdout)
      }
      const [t2, cpuSeconds] = [now(), cpuNow() - cpu]
      check(input, { bytes: statSync(outPath).size, head: readHead(outPath) }, name)
      return { seconds: t2 - t0, cpuSeconds, units: input.chunkBytes * input.chunks, runs: 1, phases: { 'write temp file': t1 - t0, run: t2 - t1 } }
    },
    async cleanup() {
      await temp.remove()
    },
  }
}

function readHead(path: string): Buffer {
  const fd = openSync(path, 'r')
  try {
    const head = Buffer.alloc(HEAD_BYTES)
    return head.subarray(0, readSync(fd, head, 0, HEAD_BYTES, 0))
  } finally {
    closeSync(fd)
  }
}

// ---------------------------------------------------------------------------------------------
// Per record

/** Deterministic text lines (LCG), no '\n' inside; some contain PATTERN. Cached per count. */
class LineInputs {
  private readonly cache = new Map<number, { text: Buffer; lines: string[]; expected: Buffer }>()

  get(count: number): { text: Buffer; lines: string[]; expected: Buffer } {
    let v = this.cache.get(count)
    if (v) return v
    const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.;:!?-'
    let x = 12345
    const next = (): number => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) >>> 8
    const lines: string[] = []
    for (let i = 0; i < count; i++) {
      const length = LINE_MIN + (next() % (LINE_MAX - LINE_MIN + 1))
      let line = ''
      for (let j = 0; j < length - 1; j++) line += alphabet[next() % alphabet.length]
      lines.push(`${line}\n`)
    }
    const text = Buffer.from(lines.join(''), 'latin1')
    const expected = Buffer.from(lines.filter((l) => l.includes(PATTERN)).join(''), 'latin1')
    v = { text, lines, expected }
    this.cache.set(count, v)
    return v
  }
}

/** The text as a stream of 64 KiB chunks (views), cut anywhere. */
function textSource(text: Buffer): Readable {
  let pos = 0
  return new Readable({
    highWaterMark: STREAM_CHUNK,
    read() {
      while (pos < text.length) {
        const end = Math.min(text.length, pos + STREAM_CHUNK)
        const more = this.push(text.subarray(pos, end))
        pos = end
        if (!more) return
      }
      this.push(null)
    },
  })
}

class CollectingSink extends Writable {
  readonly chunks: Buffer[] = []
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.chunks.push(chunk)
    callback()
  }
}

function checkRecords(name: string, got: Buffer, expected: Buffer): void {
  if (!got.equals(expected)) throw new Error(`${name}: ${got.length} bytes out, expected ${expected.length} (or different bytes)`)
}

function recordWasmTransform(program: 'grep', path: string, inputs: LineInputs, bufferSize: number | undefined, what: string): WasiCell {
  const name = cellName(program, `wasmTransform (record, ${what})`)
  return {
    group: program,
    name,
    kind: 'record',
    samples: [],
    async run(count) {
      const { text, expected } = inputs.get(count)
      const sink = new CollectingSink()
      const [start, cpu] = [now(), cpuNow()]
      const stream = wasmTransform(path, {
        wasi: { mode: 'record', args: [program, PATTERN] },
        delimiter: '\n',
        ...(bufferSize === undefined ? {} : { bufferSize }),
      })
      await pipeline(textSource(text), stream, sink)
      const [seconds, cpuSeconds] = [now() - start, cpuNow() - cpu]
      checkRecords(name, Buffer.concat(sink.chunks), expected)
      // With a delimiter the record driver runs the program once per record, however the
      // records are packed into chunks; one record per chunk also checks that packing.
      const runs = count
      if (bufferSize === ONE_RECORD_BUFFER && stream.metrics().chunks !== count) throw new Error(`${name}: ${stream.metrics().chunks} chunks for ${count} records`)
      return { seconds, cpuSeconds, units: count, runs, phases: {} }
    },
  }
}

/** A fresh @wasmer/wasi WASI + instance per line, on the main thread: the plain loop. */
function recordWasmer(program: 'grep', module: () => Promise<WebAssembly.Module>, inputs: LineInputs): WasiCell {
  const name = cellName(program, '@wasmer/wasi (fresh WASI + instance per line, main thread)')
  let mod: WebAssembly.Module | undefined
  return {
    group: program,
    name,
    kind: 'record',
    samples: [],
    async prepare() {
      await initWasmer()
      mod = await module()
    },
    async run(count) {
      const { lines, expected } = inputs.get(count)
      const outputs: Uint8Array[] = []
      const [start, cpu] = [now(), cpuNow()]
      for (const line of lines) {
        const wasi = new WasmerWASI({ env: {}, args: [program, PATTERN] })
        try {
          const instance = wasi.instantiate(mod!, {})
          wasi.setStdinString(line)
          const code = wasi.start(instance)
          if (code !== 0) throw new Error(`${name}: exit code ${code}`)
          const out = wasi.getStdoutBuffer()
          if (out.length > 0) outputs.push(out)
        } finally {
          wasi.free()
        }
      }
      const [seconds, cpuSeconds] = [now() - start, cpuNow() - cpu]
      checkRecords(name, Buffer.concat(outputs), expected)
      return { seconds, cpuSeconds, units: count, runs: count, phases: {} }
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Running and reporting

/** Runs the selected cells (see wasiCellsSelected), prints the WASI tables, returns the figures. */
export async function runWasiBench(cells: readonly WasiCell[], options: WasiBenchOptions): Promise<WasiReport> {
  const scale = options.quick ? 1 / 8 : 1
  const streamBytes = STREAM_VOLUME * scale
  const recordLines = options.quick ? RECORD_LINES / 5 : RECORD_LINES
  const sizeOf = (c: WasiCell): number => (c.kind === 'stream' ? streamBytes : recordLines)
  console.log(
    `\nWASI programs (examples/wasi/): ${formatSize(streamBytes)} per whole-stream run, ${recordLines} lines per record run, ` +
      `${cells.length} cells × (1 warm-up at ${WARMUP_FRACTION} + ${REPS} runs), load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`,
  )
  const startLoad = loadavg()
  const started = now()
  try {
    for (const cell of cells) await cell.prepare?.()
    for (const cell of cells) await cell.run(Math.max(1, Math.round(sizeOf(cell) * WARMUP_FRACTION)))
    for (let rep = 0; rep < REPS; rep++) {
      for (const cell of cells) cell.samples.push(await cell.run(sizeOf(cell)))
      process.stderr.write(`  wasi rep ${rep + 1}/${REPS} done (${(now() - started).toFixed(1)} s)\n`)
    }
  } finally {
    for (const cell of cells) await cell.cleanup?.()
  }
  const results = cells.map(summarize)
  const ratios = wasiRatios(results)
  printWasi(results, ratios)
  const seconds = now() - started
  const cores = availableParallelism()
  const endLoad = loadavg()
  console.log(`WASI part: ${seconds.toFixed(1)} s, load average ${endLoad.map((l) => l.toFixed(1)).join(' ')} at the end`)
  if (Math.max(startLoad[0]!, endLoad[0]!) > cores) {
    console.log(
      `note: load average above the ${cores} cores: wall-clock rates include waiting for a core, which costs wasmTransform ` +
        '(two threads handing chunks to each other) more than the single-threaded baselines; the CPU columns are steadier.',
    )
  }
  return { streamVolumeBytes: streamBytes, recordLines, reps: REPS, loadAverage: { start: startLoad, end: endLoad }, cores, seconds, cells: results, ratios }
}

function summarize(cell: WasiCell): WasiCellResult {
  const rates = cell.samples.map((s) => (cell.kind === 'stream' ? s.units / s.seconds / 1e6 : s.units / s.seconds))
  const phases: Record<string, number> = {}
  for (const key of Object.keys(cell.samples[0]?.phases ?? {})) phases[key] = median(cell.samples.map((s) => s.phases[key]!))
  return {
    group: cell.group,
    name: cell.name,
    kind: cell.kind,
    rates,
    rate: median(rates),
    runsPerSecond: median(cell.samples.map((s) => s.runs / s.seconds)),
    cpuRate: median(cell.samples.map((s) => (cell.kind === 'stream' ? s.units / s.cpuSeconds / 1e6 : s.units / s.cpuSeconds))),
    cpuUsPerRun: median(cell.samples.map((s) => (s.cpuSeconds * 1e6) / s.runs)),
    recordsPerRun: median(cell.samples.map((s) => s.units / s.runs)),
    phases,
    ...(cell.kind === 'stream' && 'run' in phases ? { runPhaseMBps: median(cell.samples.map((s) => s.units / s.phases.run! / 1e6)) } : {}),
  }
}

function wasiRatios(results: readonly WasiCellResult[]): WasiRatio[] {
  const find = (group: string, prefix: string): WasiCellResult | undefined =>
    results.find((r) => r.group === group && r.name.startsWith(cellName(group, prefix)))
  const out: WasiRatio[] = []
  const push = (metric: string, value: number | undefined, aim: number | undefined): void => {
    if (value === undefined || !Number.isFinite(value)) return
    out.push({ metric, value, aim, met: aim === undefined ? undefined : value >= aim })
  }
  for (const program of ['cat', 'upper']) {
    const ours = find(program, 'wasmTransform')
    if (!ours) continue
    const wasmer = find(program, '@wasmer/wasi')
    const node = find(program, 'node:wasi')
    push(`${program}: wasmTransform / @wasmer/wasi README (MB/s)`, wasmer && ours.rate / wasmer.rate, 3)
    push(`  same, per CPU-second`, wasmer && ours.cpuRate / wasmer.cpuRate, undefined)
    push(`${program}: wasmTransform / node:wasi fds, input via temp file (MB/s)`, node && ours.rate / node.rate, 1)
    push(`  same, per CPU-second`, node && ours.cpuRate / node.cpuRate, undefined)
    const runOnly = node?.runPhaseMBps
    push(`${program}: wasmTransform / node:wasi run only, input already in a file (MB/s)`, runOnly && ours.rate / runOnly, undefined)
  }
  const one = find('grep', 'wasmTransform (record, 1 record/run)')
  const batched = find('grep', 'wasmTransform (record, 64 KiB')
  const loop = find('grep', '@wasmer/wasi')
  if (loop) {
    push('grep: wasmTransform record, 1 record/run / @wasmer/wasi fresh per line (runs/s)', one && one.runsPerSecond / loop.runsPerSecond, 2)
    push('  same, per CPU-second', one && loop.cpuUsPerRun / one.cpuUsPerRun, undefined)
    push('grep: wasmTransform record, 64 KiB chunks (a run per record) / @wasmer/wasi fresh per line (records/s)', batched && batched.rate / loop.rate, undefined)
  }
  return out
}

const spread = (r: WasiCellResult): number => ((Math.max(...r.rates) - Math.min(...r.rates)) / r.rate) * 100
const ms = (s: number): string => `${(s * 1000).toFixed(0)} ms`

function printWasi(results: readonly WasiCellResult[], ratios: readonly WasiRatio[]): void {
  const N = Math.max(40, ...results.map((r) => r.name.length + 2))
  const stream = results.filter((r) => r.kind === 'stream')
  const record = results.filter((r) => r.kind === 'record')
  if (stream.length > 0) {
    console.log('WASI whole stream: MB/s of input (MB = 1e6 B), median of runs (spread = (max-min)/median), MB per CPU-second')
    console.log('of the process (all threads); median phases (wall)')
    console.log('scenario'.padEnd(N) + 'MB/s'.padStart(10) + 'spread'.padStart(9) + 'MB/CPU-s'.padStart(10) + '   phases')
    for (const r of stream) {
      const phases = Object.entries(r.phases).map(([k, v]) => `${k} ${ms(v)}`).join(', ')
      const runOnly = r.runPhaseMBps === undefined ? '' : ` (run alone ${r.runPhaseMBps.toFixed(0)} MB/s)`
      console.log(
        r.name.padEnd(N) +
          r.rate.toFixed(0).padStart(10) +
          `±${spread(r).toFixed(0)}%`.padStart(9) +
          r.cpuRate.toFixed(0).padStart(10) +
          (phases ? `   ${phases}${runOnly}` : ''),
      )
    }
    console.log()
  }
  if (record.length > 0) {
    console.log('WASI per record: records (lines) per second and program runs per second, median of runs; CPU µs per run (all threads)')
    console.log(
      'scenario'.padEnd(N) + 'records/s'.padStart(11) + 'runs/s'.padStart(10) + 'records/run'.padStart(13) + 'µs/run'.padStart(9) + 'spread'.padStart(9) + 'CPU µs/run'.padStart(12),
    )
    for (const r of record) {
      console.log(
        r.name.padEnd(N) +
          r.rate.toFixed(0).padStart(11) +
          r.runsPerSecond.toFixed(0).padStart(10) +
          r.recordsPerRun.toFixed(r.recordsPerRun < 10 ? 1 : 0).padStart(13) +
          (1e6 / r.runsPerSecond).toFixed(0).padStart(9) +
          `±${spread(r).toFixed(0)}%`.padStart(9) +
          r.cpuUsPerRun.toFixed(0).padStart(12),
      )
    }
    console.log()
  }
  if (ratios.length > 0) {
    const M = Math.max(44, ...ratios.map((r) => r.metric.length + 2))
    console.log('WASI ratios (medians over medians)')
    for (const r of ratios) {
      const aim = r.aim === undefined ? '' : `   aim >= ${r.aim}x: ${r.met ? 'met' : 'NOT met'}`
      console.log(r.metric.padEnd(M) + `${r.value.toFixed(2)}x`.padStart(9) + aim)
    }
    console.log()
  }
}
