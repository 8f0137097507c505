import type { GuestState } from '../checkpoint/types.js'
import type { WasmSandboxError } from '../errors.js'
import type { GuestLogEntry, InstanceLimits } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import type { WasiConfig } from '../wasi/options.js'
import type { WorkerPool } from './worker-pool.js'

export type RunnerCallback = (err?: Error | null) => void

export interface RunnerOptions {
  /** Size of the input region the guest allocates up front, in bytes: the largest chunk. */
  bufferSize: number
  /** The chunk size the stream starts with, when chunks may grow to bufferSize ('auto'). Default bufferSize. */
  chunkSize?: number | undefined
  limits: InstanceLimits
  /** Milliseconds one guest call may run (runners that can interrupt a call enforce it). */
  timeout: number
  /** Chunks that may be queued to the guest before `process` waits. */
  maxInFlight: number
  /** What a WASI program may see; unset for ABI v1 guests. */
  wasi?: WasiConfig | undefined
  /** Bytes the guest reads with `sandbox.config_read` (ABI v1.1). */
  guestConfig?: Uint8Array | undefined
  /** Where worker runners get their threads; default: the pool shared by streams made outside a sandbox. */
  workers?: WorkerPool | undefined
  /** Start only with a worker that is free now, else fail the start (a pool's extra instances). */
  spareWorker?: boolean | undefined
  /** Bytes of output a runner may hold back for ordering (a pool), the stream's highWaterMark. */
  highWaterMark?: number | undefined
}

/**
 * One unit of work: a chunk of input, or the end of input (`input === null`, the guest's
 * `flush`). Every hook names the job it is about, so a runner may have several in flight and a
 * wrapper (recovery, a pool) can tell their outputs apart.
 */
export interface Job {
  /** Input offset of the chunk's first byte; for the end of input, the total input length. */
  readonly offset: number
  readonly input: Buffer | null
}

/** A consistent cut, taken between two jobs: the CheckpointTap turns it into a checkpoint. */
export interface Snapshot {
  inputOffset: number
  outputOffset: number
  moduleHash: string
  state: GuestState
}

/** How a runner reports what happens to the jobs it accepted. */
export interface RunnerHooks {
  /** One output buffer of `job`; returning false asks the runner to hold further output until `resume()`. */
  output(job: Job, chunk: Buffer): boolean
  /** `job` was processed and all its output delivered. */
  done(job: Job): void
  /**
   * The guest failed on `job` (or, with `job` undefined, while idle). The instance is gone and
   * every job queued after it is dropped: `restart` or `destroy`.
   */
  failed(job: Job | undefined, err: WasmSandboxError): void
  /** Recovery dropped `job` (`recoveryStrategy: 'skip'`); the stream goes on. */
  skipped?(job: Job, err: WasmSandboxError): void
  /** A checkpoint cut was taken (see SnapshottingRunner). */
  snapshot?(snapshot: Snapshot): void
  /**
   * A WASI program wrote to stderr: diagnostics, never output. `false`: the caller's stderr is
   * full; hold what comes next until `resume()`, as for output (a guest may write to stderr
   * without end).
   */
  stderr?(chunk: Buffer): boolean | void
  /** The guest logged through `sandbox.log` (ABI v1.1), within its limits. */
  guestLog?(entry: GuestLogEntry): void
}

/**
 * How the executor drives a guest, wherever it runs (inline, in a worker) and whatever wraps it
 * (recovery, deadline, checkpoint cuts). Each method calls back exactly once.
 */
export interface GuestRunner {
  /** Instantiates the guest and runs its `init`, or, given a saved state, restores that instead. */
  start(callback: RunnerCallback, restore?: GuestState): void
  /** Queues one job; calls back when the runner can take the next one (not when it is done). */
  process(job: Job, callback: RunnerCallback): void
  /** Captures the guest's state. Only while idle: every job handed over is done. */
  snapshot(callback: (err: Error | null, state?: GuestState) => void): void
  /** Milliseconds spent inside guest calls so far. */
  guestTimeMs(): number
  /** Downstream asked for more; a runner holding output may deliver it now. */
  resume(): void
  /** Drops the instance (and every job queued to it) and starts a fresh one, from `restore` if given. */
  restart(callback: RunnerCallback, restore?: GuestState): void
  /** Releases the instance (and any worker) at once. Idempotent. */
  destroy(): void
  /**
   * Ends a started instance that has no job out, without its flush: a worker then serves the
   * next stream instead of being ended with it (a pool's spare that started too late to help).
   * Without it, or on an error, the instance is destroyed.
   */
  close?(callback: RunnerCallback): void
  /** How many instances run and why, for a runner that chooses (`maxConcurrency: 'auto'`, a pool). */
  concurrency?(): ConcurrencyReport | undefined
}

/** What `metrics().concurrency` reports. */
export interface ConcurrencyReport {
  /** Instances taking chunks now. */
  instances: number
  /** Chosen while the stream ran (`'auto'`), or as configured. */
  auto: boolean
  reason: string
  /** Throughput of each window measured, in order, in MB/s; a count shows twice when its first window did not pay. */
  samples: Array<{ instances: number; mbps: number }>
}

export type RunnerFactory = (guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions) => GuestRunner

/** Where the end-of-input job points: one object per stream is enough. */
export function endOfInput(offset: number): Job {
  return { offset, input: null }
}

/**
 * What a stateless run captures: nothing (a pool, a per-record WASI program). A checkpoint with
 * it resumes by starting the guest fresh, which for a stateless guest is the same thing.
 */
export function noState(): GuestState {
  return { memory: new Uint8Array(0), globals: [], region: { ptr: 0, size: 0 } }
}

/** Is there anything to restore in `state`, or does the guest start from `init`? */
export function hasState(state: GuestState | undefined): state is GuestState {
  return state !== undefined && (state.memory.length > 0 || state.globals.length > 0)
}
