import type { Checkpoint, CheckpointStorage } from './checkpoint/types.js'
import { errors } from './errors.js'
import { resolveWasi, type ResolvedWasi, type WasiOptions } from './wasi/options.js'

export type BackpressureStrategy = 'block' | 'drop' | 'sample' | 'adaptive'
export type RecoveryStrategy = 'fail' | 'skip' | { retry: number }
export type Isolation = 'inline' | 'worker'

export interface FlowControlOptions {
  /** Bytes buffered downstream above which a lossy strategy starts shedding. */
  highWaterMark?: number
  /** Bytes buffered downstream below which a lossy strategy stops shedding. */
  lowWaterMark?: number
  /** Chunks that may be in flight to the guest at once. */
  maxInFlight?: number
  /** With `backpressure: 'sample'`, pass one chunk in `sampleRate` while under pressure. */
  sampleRate?: number
  /** With `backpressure: 'adaptive'`, the longest delay (ms), reached at the high watermark. Default 50. */
  maxDelay?: number
}

/** What a guest may consume. Every limit is enforced per stream. */
export interface Limits {
  /** Linear memory cap in bytes (rounded down to 64 KiB pages). Default 256 MiB. */
  memory: number
  /** Milliseconds one guest call (`process_chunk`, `init`, `flush`, instantiation) may run. Default 5000. Worker isolation only. */
  timeout: number
  /** Milliseconds the whole stream may take, from start to end of flush (at most 2^31 - 1). Default: none (also `Infinity`). */
  deadline: number | undefined
  /** Bytes one chunk (or `flush`) may emit. Default (`undefined`): 16 × the chunk size + 1 MiB. */
  maxOutputPerChunk: number | undefined
  /** Bytes the stream may emit in total. Default: unlimited. */
  maxOutput: number
  /**
   * Bytes a module may have, checked before any work is done on it (a file's size before it is
   * read). Default 128 MiB: real programs run to tens of MB (a pandoc build is about 60).
   */
  moduleSize: number
  /**
   * Milliseconds loading a module may take in the loader thread (reading, hashing, parsing,
   * rewriting, compiling), for modules over 256 KiB; past it the load fails with ERR_WASM_TIMEOUT.
   * At most 2^31 - 1; `Infinity` for none.
   */
  loadTimeout: number
}

export const DEFAULT_LIMITS: Limits = {
  memory: 256 * 1024 * 1024,
  timeout: 5000,
  deadline: undefined,
  maxOutputPerChunk: undefined,
  maxOutput: Infinity,
  moduleSize: 128 * 1024 * 1024,
  loadTimeout: 30_000,
}

export interface CheckpointOptions {
  /** Where checkpoints go: `new FileCheckpointStorage(dir)`, `new MemoryCheckpointStorage()`, or your own. */
  storage: CheckpointStorage
  /** Milliseconds between checkpoints. Default `checkpointInterval` (5000). */
  interval?: number
  /** Also checkpoint after this many input bytes. Default: off. */
  every?: number
  /** Stored with every checkpoint. */
  metadata?: Record<string, unknown>
  /** Resolves once output up to the offset is durable; a checkpoint is saved only after it. */
  commit?: (outputOffset: number) => Promise<void>
  /**
   * Milliseconds one `storage.save` may take; past it the stream fails with
   * ERR_WASM_CHECKPOINT_FAILED. Default 30000; at most 2^31 - 1; `Infinity` for none.
   */
  saveTimeout?: number
}

export interface SandboxOptions {
  /** Save checkpoints (guest state + offsets) as the stream runs. */
  checkpoint?: CheckpointOptions
  /** Continue from a checkpoint: feed the input from `resumeFrom.inputOffset`. */
  resumeFrom?: Checkpoint
  /** `'worker'` (default): the guest runs in a worker thread, with time limits. `'inline'`: on this thread, for trusted guests. */
  isolation?: Isolation
  /** Memory, time and output limits; see `Limits` for defaults. */
  limits?: Partial<Limits>
  /**
   * Chunk size handed to the guest, in bytes. Default 64 KiB. `'auto'`: start at 64 KiB and try
   * 4× larger chunks while the stream runs, keeping a size only if throughput rose by 10 % or
   * more, up to 1 MiB; `metrics().chunking` says what was chosen and why.
   */
  bufferSize?: number | 'auto'
  /** Split on this delimiter so that no record is cut in two (e.g. `'\n'`). */
  delimiter?: string | Uint8Array
  /** With `delimiter`, the longest record accepted, in bytes. Default max(16 × bufferSize, 1 MiB), at most 1 GiB. */
  maxRecordSize?: number
  /** Bytes each stage buffers before it applies backpressure. Default max(`bufferSize`, 256 KiB). */
  highWaterMark?: number
  /**
   * Milliseconds input may wait for a chunk to fill before it goes to the guest short (with a
   * `delimiter`, whole records only). Default 10; 0: as soon as the event loop turns;
   * `Infinity`: wait for a full `bufferSize` or the end of input.
   */
  maxLatency?: number
  /**
   * Instances of a stateless guest one stream runs at once, each in its own worker, on
   * different chunks; output stays in input order. Default 1. Refused for a guest that keeps
   * state (see `stateless`). Chunks queued to each worker: `flowControl.maxInFlight`.
   * `'auto'`: start with one and double the instances while each doubling raises throughput
   * by 10 % or more, up to two per core (one for a guest that keeps state, or inline);
   * `metrics().concurrency` says what was chosen and why.
   */
  maxConcurrency?: number | 'auto'
  /** What to do when downstream is slower than the source: `'block'` (default) pauses the source; `'drop'`, `'sample'` and `'adaptive'` shed whole chunks (for live sources). */
  backpressure?: BackpressureStrategy
  /** Milliseconds between checkpoints (the default for `checkpoint.interval`). Default 5000. */
  checkpointInterval?: number
  /**
   * When the guest fails on a chunk: `'fail'` (default), `'skip'` it, or `{ retry: n }`. Either
   * recovery restarts the guest at the state it had before the failed chunk (its last snapshot,
   * replaying the chunks since), unless `stateless` says `init` is as good.
   */
  recoveryStrategy?: RecoveryStrategy
  /**
   * The guest keeps nothing from one chunk to the next (each chunk's output depends on that
   * chunk alone), so recovery may restart it from `init` (cheaper, no snapshots) and
   * `maxConcurrency` may run several instances. Default: what the guest declares (a
   * `wasm-sandbox.stateless` custom section, docs/abi.md); per-record WASI runs always are.
   */
  stateless?: boolean
  flowControl?: FlowControlOptions
  /** For a WASI program (or a guest built with wasi-libc): what it may see, and how it runs. */
  wasi?: WasiOptions
  /**
   * Bytes the guest can read with `sandbox.config_read` (ABI v1.1), usually in `init`: a pattern,
   * a column number, a JSON document. A string is taken as UTF-8. At most 1 MiB. Part of the
   * checkpoint options hash. Not for WASI commands (give those `wasi.args` or `wasi.env`).
   */
  guestConfig?: Uint8Array | string
  /**
   * Stops the stream at once when aborted: the guest's worker is terminated and the stream
   * fails with an `AbortError` (`cause`: the signal's reason). On a sandbox, every stream made
   * from it. `processFile` leaves output and checkpoints to resume from.
   */
  signal?: AbortSignal
  /**
   * `createSandbox` only: worker threads its streams may run at once (an integer, or
   * `Infinity`); a stream wanting one past that waits, its source held by backpressure. Default:
   * 4 per core of this machine (`os.availableParallelism()`).
   */
  maxWorkers?: number
}

export interface ResolvedOptions {
  checkpoint: Required<Pick<CheckpointOptions, 'storage' | 'interval' | 'saveTimeout'>> & Omit<CheckpointOptions, 'storage' | 'interval' | 'saveTimeout'> | undefined
  resumeFrom: Checkpoint | undefined
  isolation: Isolation
  limits: Limits
  /** With `bufferSize: 'auto'`, the size it starts at. */
  bufferSize: number
  /** `bufferSize: 'auto'`: the chunk size is tuned while the stream runs (ChunkSizeTuner). */
  autoBufferSize: boolean
  delimiter: Buffer | undefined
  maxRecordSize: number
  highWaterMark: number
  /**
   * Not part of `outputOptionsHash`, although with a guest whose output depends on chunk
   * boundaries it changes output: what makes a resume exact is the checkpoint's input offset
   * (the guest state is that of exactly the input before it), not where chunks were cut, and
   * with a finite value the cuts depend on when the writer paused, which no hash can pin down.
   * Refusing a checkpoint over it would refuse resumes that are as valid as any run.
   */
  maxLatency: number
  maxConcurrency: number | 'auto'
  backpressure: BackpressureStrategy
  checkpointInterval: number
  recoveryStrategy: RecoveryStrategy
  /** Unset: as the guest declares. */
  stateless: boolean | undefined
  flowControl: Required<FlowControlOptions>
  wasi: ResolvedWasi
  /** A private copy of the caller's `guestConfig`. */
  guestConfig: Uint8Array | undefined
  /** As given; the sandbox's pool holds the bound. */
  maxWorkers: number | undefined
  signal: AbortSignal | undefined
}

export const DEFAULT_BUFFER_SIZE = 64 * 1024
/**
 * The stages' highWaterMark by default: room for a few chunks, not one. At one chunk each
 * stage's readable side is full after every push, so every chunk takes a pause, a 'drain' and a
 * resume through each hop (readable-stream's Transform: about 2 µs a hop, against 0.5 µs at two
 * chunks). `upper` at 64 KiB, interleaved runs: inline 0.66x -> 0.77x the bare loop, worker
 * 0.54x -> 0.72x. Large chunks keep their own size: already one chunk is plenty per hop.
 */
const MIN_DEFAULT_HIGH_WATER_MARK = 256 * 1024
export function defaultHighWaterMark(bufferSize: number): number {
  return Math.max(bufferSize, MIN_DEFAULT_HIGH_WATER_MARK)
}
export const DEFAULT_MAX_LATENCY = 10
/**
 * The chunk sizes `bufferSize: 'auto'` tries, in order: the default first (smaller chunks only
 * ever cost throughput; latency is maxLatency's business), then larger while they pay.
 */
export const AUTO_BUFFER_SIZES = [64 * 1024, 256 * 1024, 1024 * 1024] as const
/**
 * Input queued to a worker at once, by default: chunks making about this many bytes. Each
 * time the queue runs low the worker wakes the main thread, and each wake-up costs both threads
 * tens of microseconds (on a busy 2-core machine, up to milliseconds of the guest waiting): at
 * two 64 KiB chunks deep a guest doing 220 µs of work per chunk sat idle a third of the time
 * (0.69x inline), at 1 MiB deep it kept up (1.02x). With the CLI then reading 1 MiB at a time,
 * `upper` to /dev/null took 1.16 s at 2 MiB deep instead of 1.25 s.
 *
 * A pool keeps at most eight per instance: a deep queue balances badly, since chunks are dealt
 * out as instances have room (with 64 queued to each, two instances of a guest whose chunks take
 * 1-9 ms ran 1.42x one instance instead of 1.95x), and a shallow one wakes the main thread for
 * every chunk. Two `jitter` instances over chunks of 0-7 M iterations took 271 ms at 2 deep,
 * 243 at 8, 242 at 16, 271 at 64; two per-record `grep` instances (a run per 200-byte line,
 * 4 KiB chunks) 900 ms at 2, 725 at 8, 701 at 16, against 864 for one instance 64 deep.
 */
const IN_FLIGHT_BYTES = 2 * 1024 * 1024
const POOL_IN_FLIGHT = 8
/** At least two, so reading and the guest overlap; at most 64, so tiny chunks keep a small ring (1 MiB at 16 KiB). */
export function defaultMaxInFlight(bufferSize: number, maxConcurrency: number | 'auto' = 1): number {
  const chunks = Math.min(64, Math.max(2, Math.ceil(IN_FLIGHT_BYTES / bufferSize)))
  return maxConcurrency === 1 ? chunks : Math.min(POOL_IN_FLIGHT, chunks)
}
/** Node's longest timer: a longer delay would silently fire after 1 ms. */
const MAX_TIMER_DELAY = 2 ** 31 - 1

const KNOWN_KEYS = new Set<string>([
  'checkpoint',
  'resumeFrom',
  'isolation',
  'limits',
  'bufferSize',
  'delimiter',
  'maxRecordSize',
  'highWaterMark',
  'maxLatency',
  'maxConcurrency',
  'backpressure',
  'checkpointInterval',
  'recoveryStrategy',
  'stateless',
  'maxWorkers',
  'signal',
  'flowControl',
  'wasi',
  'guestConfig',
])
const FLOW_KEYS = new Set<string>(['highWaterMark', 'lowWaterMark', 'maxInFlight', 'sampleRate', 'maxDelay'])

function positiveInt(name: string, value: unknown, fallback: number, max = 2 ** 31 - 1): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw errors.invalidOption(`${name} must be an integer from 1 to ${max}, got ${String(value)}`)
  }
  return value
}

/** `maxLatency`, checked for `resolveOptions` and for a `Chunker` built directly alike. */
export function resolveMaxLatency(value: unknown): number {
  if (value === undefined) return DEFAULT_MAX_LATENCY
  if (value === Infinity) return Infinity
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0 || value > MAX_TIMER_DELAY) {
    throw errors.invalidOption(`maxLatency must be a number of milliseconds from 0 to ${MAX_TIMER_DELAY}, or Infinity, got ${String(value)}`)
  }
  return value
}

export function rejectUnknown(where: string, obj: object, known: Set<string>): void {
  const unknown = Object.keys(obj).filter((k) => !known.has(k))
  if (unknown.length > 0) {
    throw errors.invalidOption(
      `Unknown ${where}: ${unknown.join(', ')}. Known ones are ${[...known].join(', ')}.`,
    )
  }
}

function resolveDelimiter(value: unknown): Buffer | undefined {
  if (value === undefined) return undefined
  if (typeof value === 'string' && value.length > 0) return Buffer.from(value, 'utf8')
  if (value instanceof Uint8Array && value.length > 0) return Buffer.from(value)
  throw errors.invalidOption('delimiter must be a non-empty string or Uint8Array')
}

function resolveRecovery(value: unknown): RecoveryStrategy {
  if (value === undefined || value === 'fail') return 'fail'
  if (value === 'skip') return 'skip'
  if (typeof value === 'object' && value !== null && Object.keys(value).length === 1) {
    const retry = (value as { retry?: unknown }).retry
    if (typeof retry === 'number' && Number.isInteger(retry) && retry >= 1 && retry <= 100) return { retry }
  }
  throw errors.invalidOption(`recoveryStrategy must be 'fail', 'skip' or { retry: n } with n from 1 to 100, got ${JSON.stringify(value)}`)
}

function resolveIsolation(value: unknown): Isolation {
  if (value === undefined) return 'worker'
  if (value === 'worker' || value === 'inline') return value
  throw errors.invalidOption(`isolation must be 'worker' or 'inline', got ${JSON.stringify(value)}`)
}

const LIMIT_KEYS = new Set<string>(Object.keys(DEFAULT_LIMITS))

function optionalPositive(name: string, value: unknown, fallback: number | undefined): number | undefined {
  if (value === undefined) return fallback
  if (value === Infinity) return Infinity
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw errors.invalidOption(`${name} must be a positive number, got ${String(value)}`)
  }
  return value
}

/**
 * A time limit a timer enforces: a delay past Node's longest timer would fire after 1 ms (a
 * deadline of 3e9 ms failed every stream at once), so it is refused; Infinity means none.
 */
function optionalDelay(name: string, value: unknown, fallback: number | undefined): number | undefined {
  const ms = optionalPositive(name, value, fallback)
  if (ms !== undefined && ms !== Infinity && ms > MAX_TIMER_DELAY) {
    throw errors.invalidOption(`${name} must be a number of milliseconds up to ${MAX_TIMER_DELAY} (about 24.8 days), or Infinity for none, got ${ms}`)
  }
  return ms
}

function resolveLimits(value: unknown): Limits {
  const limits = (value ?? {}) as Partial<Limits>
  if (typeof limits !== 'object' || limits === null) throw errors.invalidOption('limits must be an object')
  rejectUnknown('limit', limits, LIMIT_KEYS)
  const memory = optionalPositive('limits.memory', limits.memory, DEFAULT_LIMITS.memory)!
  if (memory < 65536 || memory > 4 * 1024 ** 3) {
    throw errors.invalidOption(`limits.memory must be from 65536 (one page) to 4 GiB, got ${memory}`)
  }
  const deadline = optionalDelay('limits.deadline', limits.deadline, undefined)
  return {
    memory,
    timeout: optionalPositive('limits.timeout', limits.timeout, DEFAULT_LIMITS.timeout)!,
    // Infinity is no deadline, as when none is given: no timer, no DeadlineRunner.
    deadline: deadline === Infinity ? undefined : deadline,
    maxOutputPerChunk: optionalPositive('limits.maxOutputPerChunk', limits.maxOutputPerChunk, undefined),
    maxOutput: optionalPositive('limits.maxOutput', limits.maxOutput, Infinity)!,
    moduleSize: optionalPositive('limits.moduleSize', limits.moduleSize, DEFAULT_LIMITS.moduleSize)!,
    loadTimeout: optionalDelay('limits.loadTimeout', limits.loadTimeout, DEFAULT_LIMITS.loadTimeout)!,
  }
}

function resolveBackpressure(value: unknown): BackpressureStrategy {
  if (value === undefined) return 'block'
  if (value === 'block' || value === 'drop' || value === 'sample' || value === 'adaptive') return value
  throw errors.invalidOption(`backpressure must be 'block', 'drop', 'sample' or 'adaptive', got ${JSON.stringify(value)}`)
}

/** What the BackpressureGate runs with, resolved. */
export interface GateSettings {
  strategy: BackpressureStrategy
  /** The gate's own stream highWaterMark. */
  streamHwm: number
  high: number
  low: number
  sampleRate: number
  maxDelay: number
}

/**
 * The gate's settings, by one set of rules whether they come through `createSandbox` or
 * `new BackpressureGate(...)`.
 */
export function resolveGateSettings(strategy: unknown, flowControl: unknown, highWaterMark: unknown, defaultHwm = DEFAULT_BUFFER_SIZE): GateSettings {
  const flow = (flowControl ?? {}) as FlowControlOptions
  if (typeof flow !== 'object' || flow === null) throw errors.invalidOption('flowControl must be an object')
  rejectUnknown('flowControl option', flow, FLOW_KEYS)
  const streamHwm = positiveInt('highWaterMark', highWaterMark, defaultHwm)
  const high = positiveInt('flowControl.highWaterMark', flow.highWaterMark, streamHwm)
  const low = flow.lowWaterMark === undefined ? Math.floor(high / 2) : flow.lowWaterMark
  if (typeof low !== 'number' || !Number.isInteger(low) || low < 0 || low > high) {
    throw errors.invalidOption(`flowControl.lowWaterMark must be an integer from 0 to flowControl.highWaterMark (${high}), got ${String(low)}`)
  }
  const maxDelay = flow.maxDelay ?? 50
  if (typeof maxDelay !== 'number' || !Number.isInteger(maxDelay) || maxDelay < 0 || maxDelay > 60_000) {
    throw errors.invalidOption(`flowControl.maxDelay must be an integer number of ms from 0 to 60000, got ${String(maxDelay)}`)
  }
  return {
    strategy: resolveBackpressure(strategy),
    streamHwm,
    high,
    low,
    sampleRate: positiveInt('flowControl.sampleRate', flow.sampleRate, 10),
    maxDelay,
  }
}

function resolveFlowControl(value: unknown, highWaterMark: number, bufferSize: number, maxConcurrency: number | 'auto'): Required<FlowControlOptions> {
  const gate = resolveGateSettings(undefined, value, highWaterMark)
  const flow = (value ?? {}) as FlowControlOptions
  return {
    highWaterMark: gate.high,
    lowWaterMark: gate.low,
    maxInFlight: positiveInt('flowControl.maxInFlight', flow.maxInFlight, defaultMaxInFlight(bufferSize, maxConcurrency), 1024),
    sampleRate: gate.sampleRate,
    maxDelay: gate.maxDelay,
  }
}

/** Throws ERR_WASM_INVALID_OPTION unless `storage` has the four `CheckpointStorage` methods. */
export function checkStorage(storage: unknown): asserts storage is CheckpointStorage {
  const methods = storage as Record<string, unknown> | null | undefined
  if (methods === null || methods === undefined || !['save', 'loadLatest', 'list', 'prune'].every((m) => typeof methods[m] === 'function')) {
    throw errors.invalidOption('checkpoint.storage must implement save, loadLatest, list and prune (see CheckpointStorage)')
  }
}

/**
 * How long a checkpoint save may take by default. The end of the stream waits for the save in
 * flight, so a storage that never answers would hold it for good; a healthy one takes well under
 * a second for a 256 MiB guest on a local disk, and a busy network store a few seconds.
 */
export const DEFAULT_SAVE_TIMEOUT = 30_000

/** `checkpoint.saveTimeout`, checked for `resolveOptions` and for a `CheckpointTap` built directly alike. */
export function resolveSaveTimeout(value: unknown): number {
  return optionalDelay('checkpoint.saveTimeout', value, DEFAULT_SAVE_TIMEOUT)!
}

const CHECKPOINT_KEYS = new Set<string>(['storage', 'interval', 'every', 'metadata', 'commit', 'saveTimeout'])

function resolveCheckpoint(value: unknown, checkpointInterval: number): ResolvedOptions['checkpoint'] {
  if (value === undefined) return undefined
  if (typeof value !== 'object' || value === null) throw errors.invalidOption('checkpoint must be an object')
  rejectUnknown('checkpoint option', value, CHECKPOINT_KEYS)
  const c = value as CheckpointOptions
  checkStorage(c.storage)
  if (c.commit !== undefined && typeof c.commit !== 'function') throw errors.invalidOption('checkpoint.commit must be a function')
  return {
    storage: c.storage,
    interval: positiveInt('checkpoint.interval', c.interval, checkpointInterval),
    every: c.every === undefined ? undefined : positiveInt('checkpoint.every', c.every, 1, Number.MAX_SAFE_INTEGER),
    metadata: c.metadata ?? {},
    commit: c.commit,
    saveTimeout: resolveSaveTimeout(c.saveTimeout),
  }
}

function resolveResume(value: unknown): Checkpoint | undefined {
  if (value === undefined) return undefined
  const c = value as Checkpoint
  if (typeof c !== 'object' || c === null || c.version !== 1 || typeof c.inputOffset !== 'number' || !c.guest) {
    throw errors.invalidOption('resumeFrom must be a checkpoint (from CheckpointStorage.loadLatest())')
  }
  return c
}

function resolveWasiFor(value: unknown): ResolvedWasi {
  const wasi = resolveWasi(value ?? {})!
  if (wasi.mode === 'record' && wasi.preopens.some((p) => p.writable)) {
    throw errors.invalidOption("wasi.preopens: a writable grant needs wasi.mode 'stream' (in 'record' mode every run starts from the same files)")
  }
  return wasi
}

/** The most bytes `guestConfig` may hold: configuration, not data (the data is the stream). */
export const MAX_GUEST_CONFIG = 1024 * 1024

/** `guestConfig`, copied, so a caller changing its buffer later does not change the guest's config. */
export function resolveGuestConfig(value: unknown): Uint8Array | undefined {
  if (value === undefined) return undefined
  let bytes: Uint8Array
  if (typeof value === 'string') bytes = new TextEncoder().encode(value)
  else if (value instanceof Uint8Array) bytes = Uint8Array.prototype.slice.call(value)
  else throw errors.invalidOption(`guestConfig must be a string or a Uint8Array, got ${value === null ? 'null' : typeof value}`)
  if (bytes.length > MAX_GUEST_CONFIG) {
    throw errors.invalidOption(`guestConfig must be at most ${MAX_GUEST_CONFIG} bytes, got ${bytes.length}: pass data through the stream instead`)
  }
  return bytes
}

/** How input is cut, by one set of rules for `createSandbox` and `new Chunker(...)`. */
export function resolveChunking(
  bufferSizeOption: unknown,
  delimiterOption: unknown,
  maxRecordSizeOption: unknown,
): { bufferSize: number; delimiter: Buffer | undefined; maxRecordSize: number } {
  const bufferSize = positiveInt('bufferSize', bufferSizeOption, DEFAULT_BUFFER_SIZE, 1024 * 1024 * 1024)
  const delimiter = resolveDelimiter(delimiterOption)
  if (delimiter && delimiter.length > bufferSize) {
    throw errors.invalidOption(`delimiter (${delimiter.length} bytes) must be no longer than bufferSize (${bufferSize})`)
  }
  const maxRecordSize = positiveInt('maxRecordSize', maxRecordSizeOption, Math.min(Math.max(16 * bufferSize, 1024 * 1024), 1024 * 1024 * 1024), 1024 * 1024 * 1024)
  if (maxRecordSize < bufferSize) {
    throw errors.invalidOption(`maxRecordSize (${maxRecordSize}) must be at least bufferSize (${bufferSize})`)
  }
  return { bufferSize, delimiter, maxRecordSize }
}

function resolveSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined
  if (!(signal instanceof AbortSignal)) throw errors.invalidOption(`signal must be an AbortSignal, got ${typeof signal}`)
  return signal
}

/** Validates user options once, up front, so a typo fails loudly instead of being ignored. */
export function resolveOptions(options: SandboxOptions = {}): ResolvedOptions {
  if (typeof options !== 'object' || options === null) throw errors.invalidOption('options must be an object')
  rejectUnknown('option', options, KNOWN_KEYS)
  const autoBufferSize = options.bufferSize === 'auto'
  const { bufferSize, delimiter, maxRecordSize } = resolveChunking(autoBufferSize ? AUTO_BUFFER_SIZES[0] : options.bufferSize, options.delimiter, options.maxRecordSize)
  const highWaterMark = positiveInt('highWaterMark', options.highWaterMark, defaultHighWaterMark(bufferSize))
  const isolation = resolveIsolation(options.isolation)
  const maxConcurrency = options.maxConcurrency === 'auto' ? (isolation === 'inline' ? 1 : 'auto') : positiveInt('maxConcurrency', options.maxConcurrency, 1, 1024)
  if (maxConcurrency !== 'auto' && maxConcurrency > 1 && isolation === 'inline') {
    throw errors.invalidOption(`maxConcurrency ${maxConcurrency} runs instances in parallel worker threads: it needs isolation 'worker' (inline instances would share this thread)`)
  }
  const checkpointInterval = positiveInt('checkpointInterval', options.checkpointInterval, 5000)
  const limits = resolveLimits(options.limits)
  const recoveryStrategy = resolveRecovery(options.recoveryStrategy)
  if (recoveryStrategy !== 'fail' && limits.maxOutputPerChunk === Infinity) {
    // Recovery holds a chunk's output until the chunk succeeds: the hold needs a bound.
    throw errors.invalidOption(
      `limits.maxOutputPerChunk cannot be Infinity with recoveryStrategy ${JSON.stringify(recoveryStrategy)}: a chunk's output is held until the chunk succeeds, so give it a bound`,
    )
  }
  if (options.stateless !== undefined && typeof options.stateless !== 'boolean') {
    throw errors.invalidOption(`stateless must be true or false, got ${JSON.stringify(options.stateless)}`)
  }
  return {
    checkpoint: resolveCheckpoint(options.checkpoint, checkpointInterval),
    resumeFrom: resolveResume(options.resumeFrom),
    isolation,
    limits,
    bufferSize,
    autoBufferSize,
    delimiter,
    maxRecordSize,
    highWaterMark,
    maxLatency: resolveMaxLatency(options.maxLatency),
    maxConcurrency,
    backpressure: resolveBackpressure(options.backpressure),
    checkpointInterval,
    recoveryStrategy,
    stateless: options.stateless,
    wasi: { ...resolveWasiFor(options.wasi), delimiter },
    // With 'auto', the queue of its first size: two chunks of its largest would leave a worker
    // waiting for input while the stream runs at 64 KiB.
    flowControl: resolveFlowControl(options.flowControl, highWaterMark, bufferSize, maxConcurrency),
    guestConfig: resolveGuestConfig(options.guestConfig),
    signal: resolveSignal(options.signal),
    maxWorkers: options.maxWorkers === Infinity ? Infinity : options.maxWorkers === undefined ? undefined : positiveInt('maxWorkers', options.maxWorkers, 1),
  }
}
