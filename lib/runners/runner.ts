import type { GuestState } from '../checkpoint/types.js'
import type { WasmSandboxError } from '../errors.js'
import type { InstanceLimits } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'

export type RunnerCallback = (err?: Error | null) => void

export interface RunnerOptions {
  /** Size of the input region the guest allocates up front, in bytes. */
  bufferSize: number
  limits: InstanceLimits
  /** Milliseconds one guest call may run (runners that can interrupt a call enforce it). */
  timeout: number
  /** Chunks that may be queued to the guest before `process` waits. */
  maxInFlight: number
}

/** How a runner reports what happens to the chunks it accepted, in order. */
export interface RunnerHooks {
  /** One output buffer; returning false asks the runner to hold further output until `resume()`. */
  output(chunk: Buffer): boolean
  /** The oldest chunk not yet done was processed and all its output delivered. */
  done(): void
  /** The guest failed on the oldest chunk not yet done. The instance is gone: `restart` or `destroy`. */
  failed(err: WasmSandboxError): void
}

/**
 * How the executor drives a guest, wherever it runs (inline, in a worker). The executor does
 * not know which: limits, recovery and checkpoints are written once against this interface.
 * Each method calls back exactly once.
 */
export interface GuestRunner {
  /** Instantiates the guest and runs its `init`, or, given a saved state, restores that instead. */
  start(callback: RunnerCallback, restore?: GuestState): void
  /** Queues one chunk; calls back when the runner can take the next one (not when it is done). */
  process(chunk: Buffer, offset: number, callback: RunnerCallback): void
  /** End of input: runs the guest's `flush`; calls back once every output has been delivered. */
  flush(offset: number, callback: RunnerCallback): void
  /** Captures the guest's state. Only while idle: every chunk handed over is done. */
  snapshot(callback: (err: Error | null, state?: GuestState) => void): void
  /** Milliseconds spent inside guest calls so far. */
  guestTimeMs(): number
  /** Downstream asked for more; a runner holding output may deliver it now. */
  resume(): void
  /** Drops the instance (and anything queued to it) and starts a fresh one. */
  restart(callback: RunnerCallback): void
  /** Releases the instance (and any worker) at once. Idempotent. */
  destroy(): void
}

export type RunnerFactory = (guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions) => GuestRunner
