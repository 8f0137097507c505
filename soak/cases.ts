/**
 * The case generator: case `i` of seed `s` is a module (one of the bundled guests, most often
 * damaged), an input cut into pieces with pauses between some, a reader that is sometimes slow,
 * and a random but mostly valid option set. Pure: the parent regenerates a case to save its
 * reproducer, the child to run it.
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SandboxOptions } from '../lib/index.js'
import { Rng } from './random.js'
import { mutate } from './wasm-mutations.js'

/** Options as data: checkpoints are `{ interval, every }` (memory storage is made at run time). */
export type CaseOptions = Omit<SandboxOptions, 'checkpoint' | 'resumeFrom' | 'signal' | 'wasi' | 'guestConfig' | 'delimiter'> & {
  checkpoint?: { interval?: number; every?: number }
  wasi?: NonNullable<SandboxOptions['wasi']> & { stderr?: never }
  guestConfig?: string
  delimiter?: string
}

export interface CaseSpec {
  seed: number
  index: number
  /** The guest it started from, and what was done to it (empty: run as it is). */
  source: string
  mutations: string[]
  module: Buffer
  input: Buffer
  /** Sizes the input is written in, in order; they sum to the input's length. */
  pieces: number[]
  /** Before each piece: 0 none, -1 a turn of the event loop, n > 0 that many ms. */
  pauses: number[]
  /** Milliseconds the reader takes over each output chunk, cycled (0: at once). */
  readerDelays: number[]
  options: CaseOptions
  /** Past this many ms without a settle the case is a hang: its limits, plus 2 s. */
  boundMs: number
}

interface Source {
  name: string
  kind: 'abi' | 'wasi'
  bytes: Buffer
}

const root = (() => {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    try {
      readFileSync(join(dir, 'package.json'))
      return dir
    } catch {
      const parent = dirname(dir)
      if (parent === dir) throw new Error('cannot find the repository root')
      dir = parent
    }
  }
})()

const SOURCE_FILES: ReadonlyArray<readonly [string, Source['kind']]> = [
  ['examples/pass.wasm', 'abi'],
  ['examples/upper.wasm', 'abi'],
  ['examples/upper-scalar.wasm', 'abi'],
  ['examples/grep.wasm', 'abi'],
  ['examples/wc.wasm', 'abi'],
  ['examples/numberer.wasm', 'abi'],
  ['examples/counter-global.wasm', 'abi'],
  ['spec/fixtures/v11-config.wasm', 'abi'],
  ['spec/fixtures/v11-log.wasm', 'abi'],
  ['spec/fixtures/wasi-cat.wasm', 'wasi'],
  ['spec/fixtures/wasi-counter.wasm', 'wasi'],
  ['examples/wasi/cat.wasm', 'wasi'],
  ['examples/wasi/upper.wasm', 'wasi'],
  ['examples/wasi/wc.wasm', 'wasi'],
  ['examples/wasi/counter.wasm', 'wasi'],
  ['examples/wasi/fail.wasm', 'wasi'],
  ['examples/wasi/head.wasm', 'wasi'],
  ['examples/wasi/grep.wasm', 'wasi'],
  ['examples/wasi/escape.wasm', 'wasi'],
  ['examples/wasi/lookup.wasm', 'wasi'],
]

let sources: Source[] | undefined
function loadSources(): Source[] {
  sources ??= SOURCE_FILES.map(([name, kind]) => ({ name, kind, bytes: readFileSync(join(root, name)) }))
  return sources
}

/** Chunks a case may make: keeps a tiny bufferSize on a large input from turning one case into minutes. */
const MAX_CHUNKS = 64
/** The margin the brief gives a case past its limits before it counts as a hang. */
const HANG_MARGIN_MS = 2000
/**
 * What a worker restart after a failed call may take on a loaded machine: about 170 ms here
 * alone, but 300 ms let cases that restart at every chunk pass their bound while five jobs
 * shared the two cores (seed 1, cases 1276 and 1446: 11 s alone, over 27 s then).
 */
const RESTART_MS = 1000
/** What an inline call (no time limit) is allowed in the bound: the bundled guests take microseconds. */
const INLINE_CALL_MS = 1000

const WORDS = ['alpha', 'ERROR', 'beta', 'gamma', 'x', '', 'delta  ', 'Tab\there', 'error', '!', 'ünïcödé', 'a\r']

function makeInput(rng: Rng, max: number): Buffer {
  const size = Math.min(max, rng.weighted([
    [1, 0],
    [3, rng.int(1, 64)],
    [4, rng.int(65, 4096)],
    [2, rng.int(4097, 32768)],
    [0.3, rng.int(32769, 200_000)],
  ] as const))
  if (rng.chance(0.3)) return rng.bytes(size)
  const parts: string[] = []
  let length = 0
  while (length < size) {
    const line = Array.from({ length: rng.int(0, 8) }, () => rng.pick(WORDS)).join(' ') + (rng.chance(0.95) ? '\n' : '')
    parts.push(line)
    length += Buffer.byteLength(line)
  }
  return Buffer.from(parts.join('')).subarray(0, size)
}

function cutPoints(rng: Rng, length: number): { pieces: number[]; pauses: number[] } {
  const cuts = new Set<number>()
  const n = length === 0 ? 0 : rng.int(0, Math.min(24, length - 1))
  for (let i = 0; i < n; i++) cuts.add(rng.int(1, length - 1))
  const sorted = [...cuts].sort((a, b) => a - b)
  const pieces: number[] = []
  let at = 0
  for (const cut of [...sorted, length]) {
    if (cut > at) pieces.push(cut - at)
    at = cut
  }
  // Some pauses longer than the default maxLatency (10 ms), so short chunks go out mid-stream.
  const pauses = pieces.map(() => rng.weighted([[14, 0], [4, -1], [2, rng.int(1, 25)]] as const))
  return { pieces, pauses }
}

function wasiOptions(rng: Rng, source: string): CaseOptions['wasi'] {
  const program = source.split('/').pop()!.replace('.wasm', '')
  const args = rng.weighted([
    [3, [program]],
    [2, [program, rng.pick(['ERROR', 'a', 'zz'])]],
    [2, [program, String(rng.int(0, 5))]],
    [1, [program, '/data/dict.txt']],
  ] as const)
  return {
    mode: rng.chance(0.5) ? 'stream' : 'record',
    args: [...args],
    ...(rng.chance(0.3) && { env: { LANG: 'C', SOAK: 'yes' } }),
    ...(rng.chance(0.5) && { clock: rng.pick(['real', 'fixed', 'none'] as const) }),
    ...(rng.chance(0.5) && { random: rng.pick(['real', 'seeded', 'none'] as const), seed: rng.int(1, 1000) }),
  }
}

function makeOptions(rng: Rng, source: Source, mutated: boolean): CaseOptions {
  const options: CaseOptions = {}
  // Inline there is no time limit by design: a damaged module that loops would hang the process
  // and be counted as the sandbox's hang. Only intact guests run inline.
  const inline = !mutated && source.kind === 'abi' && rng.chance(0.5)
  if (inline) options.isolation = 'inline'
  else if (rng.chance(0.3)) options.isolation = 'worker'

  const limits: NonNullable<CaseOptions['limits']> = {}
  if (rng.chance(0.4)) limits.memory = rng.weighted([[1, 65536], [1, 131072], [3, 1 << 20], [3, 16 << 20], [2, 64 << 20]] as const)
  // Short limits keep a looping mutant cheap; the bound below is computed from them.
  limits.timeout = rng.weighted([[4, 50], [4, 150], [2, 400], [1, 1000]] as const)
  if (rng.chance(0.25)) limits.maxOutputPerChunk = rng.pick([1, 16, 1024, 65536])
  if (rng.chance(0.12)) limits.maxOutput = rng.pick([1, 100, 10_000])
  if (rng.chance(0.12)) limits.deadline = rng.pick([50, 300, 2000])
  if (rng.chance(0.03)) limits.moduleSize = rng.pick([8, 100, 1000])
  options.limits = limits

  if (rng.chance(0.1)) options.bufferSize = 'auto'
  else if (rng.chance(0.8)) options.bufferSize = rng.pick([1, 7, 64, 1000, 4096, 65536])
  if (rng.chance(0.3)) options.delimiter = rng.chance(0.85) ? '\n' : 'ab'
  // A maxRecordSize under bufferSize is refused: rarely, so that most cases run.
  if (options.delimiter && rng.chance(0.3)) options.maxRecordSize = rng.weighted([[1, 16], [3, 0], [2, 1 << 20]] as const)
  if (rng.chance(0.2)) options.highWaterMark = rng.pick([1, 16, 1024, 65536])
  if (rng.chance(0.3)) options.maxLatency = rng.pick([0, 1, 10, Infinity])

  options.recoveryStrategy = rng.weighted<NonNullable<CaseOptions['recoveryStrategy']>>([[5, 'fail'], [3, 'skip'], [1, { retry: 1 }], [1, { retry: 3 }]])
  if (rng.chance(0.3)) options.stateless = rng.chance(0.7)
  if (rng.chance(0.15)) {
    options.maxConcurrency = rng.pick([2, 3, 'auto'] as const)
    if (rng.chance(0.8)) options.stateless = true
  }
  if (rng.chance(0.15)) options.backpressure = rng.pick(['drop', 'sample', 'adaptive'] as const)
  if (rng.chance(0.2)) {
    const flow: NonNullable<CaseOptions['flowControl']> = {}
    if (rng.chance(0.5)) flow.maxInFlight = rng.pick([1, 2, 4])
    if (options.backpressure && rng.chance(0.7)) {
      flow.highWaterMark = rng.pick([64, 4096, 65536])
      flow.lowWaterMark = Math.floor(flow.highWaterMark / rng.pick([2, 4]))
      if (options.backpressure === 'sample') flow.sampleRate = rng.int(1, 5)
      if (options.backpressure === 'adaptive') flow.maxDelay = rng.pick([1, 10, 50])
    }
    options.flowControl = flow
  }
  if (rng.chance(0.2)) {
    options.checkpoint = { interval: rng.pick([1, 10, 1000]) }
    if (rng.chance(0.5)) options.checkpoint.every = rng.pick([1, 100, 4096])
  }
  if (rng.chance(0.05)) options.checkpointInterval = rng.pick([1, 50])
  if (source.name.includes('v11-config') ? rng.chance(0.8) : rng.chance(0.03)) options.guestConfig = rng.pick(['ERROR', '', 'x'.repeat(300)])
  if (source.kind === 'wasi') {
    options.wasi = wasiOptions(rng, source.name)
    // Refused for one run over the whole stream: mostly left out, so that the program runs.
    if (options.wasi!.mode === 'stream' && rng.chance(0.9)) {
      delete options.recoveryStrategy
      delete options.checkpoint
    }
  }
  return options
}

/**
 * How long the case may take before it is a hang: every guest call it can make at its time
 * limit, each followed by a worker restart, plus the pauses, plus 2 s. Calls are the chunks (a
 * WASI program per record: the records), start, init, alloc and flush, times the attempts.
 */
function boundFor(options: CaseOptions, input: Buffer, pauses: number[], readerDelays: number[]): number {
  const limits = options.limits ?? {}
  const perCall = options.isolation === 'inline' ? INLINE_CALL_MS : (limits.timeout ?? 5000) + RESTART_MS
  const chunkSize = typeof options.bufferSize === 'number' ? options.bufferSize : 64 * 1024
  // Short chunks go out on pauses and maxLatency too: at most one extra chunk per piece.
  let chunks = Math.ceil(input.length / chunkSize) + pauses.length + 1
  if (options.wasi?.mode === 'record' && options.delimiter) chunks += input.toString('latin1').split(options.delimiter).length
  const recovery = options.recoveryStrategy
  const attempts = typeof recovery === 'object' ? recovery.retry + 1 : 1
  const calls = (chunks + 4) * attempts
  const waits = pauses.reduce((sum, p) => sum + Math.max(p, 0), 0) + readerDelays.reduce((a, b) => a + b, 0) * chunks
  const limit = Math.min(perCall * calls, (limits.deadline ?? Infinity) + RESTART_MS)
  return Math.ceil(limit + waits + HANG_MARGIN_MS)
}

export function generateCase(seed: number, index: number): CaseSpec {
  const rng = new Rng(seed, index)
  const all = loadSources()
  // The small WAT guests run guest code after a random byte far more often than the C builds,
  // where nearly any damage fails validation: weight them up.
  const source = rng.weighted(all.map((s) => [s.bytes.length < 2000 ? 3 : 1, s] as const))
  const mutated = rng.chance(0.65)
  const { bytes, steps } = mutated ? mutate(rng, source.bytes, all.map((s) => s.bytes)) : { bytes: source.bytes, steps: [] }
  const options = makeOptions(rng, source, steps.length > 0)
  // A WASI program per record runs once a line: a short input keeps such a case to seconds.
  const input = makeInput(rng, options.wasi?.mode === 'record' && options.delimiter ? 2048 : Infinity)
  if (typeof options.bufferSize === 'number') options.bufferSize = Math.max(options.bufferSize, Math.ceil(input.length / MAX_CHUNKS))
  if (options.maxRecordSize === 0) options.maxRecordSize = typeof options.bufferSize === 'number' ? options.bufferSize : 65536
  const { pieces, pauses } = cutPoints(rng, input.length)
  const readerDelays = rng.chance(0.2) ? Array.from({ length: rng.int(1, 4) }, () => rng.pick([0, 0, 1, 5])) : [0]
  return {
    seed,
    index,
    source: source.name,
    mutations: steps,
    module: bytes,
    input,
    pieces,
    pauses,
    readerDelays,
    options,
    boundMs: boundFor(options, input, pauses, readerDelays),
  }
}

/** JSON for options: `Infinity` survives as a string. */
export function optionsToJson(options: CaseOptions): string {
  return JSON.stringify(options, (_k, v: unknown) => (v === Infinity ? 'Infinity' : v), 2)
}

export function optionsFromJson(text: string): CaseOptions {
  return JSON.parse(text, (_k, v: unknown) => (v === 'Infinity' ? Infinity : v)) as CaseOptions
}
