import type { LoadedGuest } from '../guest/load.js'
import type { OutputLimits, OutputSink } from '../guest/instance.js'

export type RunnerCallback = (err?: Error | null) => void

export interface RunnerOptions {
  /** Size of the input region the guest allocates up front, in bytes. */
  bufferSize: number
  limits: OutputLimits
}

/**
 * How the executor drives a guest, wherever it runs (inline, in a worker). The executor does
 * not know which: limits, recovery and checkpoints are written once against this interface.
 *
 * Outputs go to the sink given at creation, in order. Each method calls back exactly once.
 */
export interface GuestRunner {
  /** Instantiates the guest and runs its `init`. */
  start(callback: RunnerCallback): void
  /** Hands one chunk to the guest; calls back when the runner can take the next one. */
  process(chunk: Buffer, offset: number, callback: RunnerCallback): void
  /** End of input: runs the guest's `flush`; calls back once every output has been delivered. */
  flush(offset: number, callback: RunnerCallback): void
  /** Downstream asked for more; a runner that paused delivering output may go on. */
  resume(): void
  /** Releases the instance (and any worker) at once. Idempotent. */
  destroy(): void
}

export type RunnerFactory = (guest: LoadedGuest, sink: OutputSink, options: RunnerOptions) => GuestRunner
