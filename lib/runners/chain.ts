import type { Isolation, RecoveryStrategy } from '../options.js'
import { DeadlineRunner } from './deadline.js'
import { InlineRunner } from './inline.js'
import { RecoveringRunner } from './recovering.js'
import type { RunnerFactory, RunnerOptions } from './runner.js'
import type { DriverName } from './driver.js'
import type { LoadedGuest } from '../guest/load.js'
import { SnapshottingRunner, type SnapshotSchedule } from './snapshotting.js'
import { FixedConcurrency, PoolRunner } from './pool.js'
import { WorkerRunner } from './worker.js'

export interface RunnerChainOptions {
  isolation: Isolation
  recovery: RecoveryStrategy
  /**
   * The guest keeps nothing between chunks: recovery restarts it from `init`, and a pool may
   * run it. Unset: as the guest declares (per-record WASI runs always are).
   */
  stateless?: boolean | undefined
  /** Instances one stream runs at once (a PoolRunner past 1; stateless guests only), or 'auto'. */
  concurrency?: number | 'auto'
  /** `limits.deadline`: ms for the whole stream. */
  deadline?: number | undefined
  /** Checkpoint cuts; off when undefined. */
  snapshots?: SnapshotSchedule | undefined
}

const isolated: Record<Isolation, RunnerFactory> = {
  inline: (guest, hooks, options) => new InlineRunner(guest, hooks, options),
  worker: (guest, hooks, options) => new WorkerRunner(guest, hooks, options, driverFor(guest, options)),
}

/** The worker driver for a guest kind: a WASI driver is a new file here, not a branch elsewhere. */
function driverFor(guest: LoadedGuest, options: RunnerOptions): DriverName {
  if (guest.abi.kind !== 'wasi-command') return 'abi-v1'
  return options.wasi?.mode === 'record' ? 'wasi-record' : 'wasi-stream'
}

/** Does the guest keep nothing between chunks? The caller's word wins over the guest's. */
export function isStateless(guest: LoadedGuest, stateless: boolean | undefined, options: RunnerOptions): boolean {
  if (guest.abi.kind === 'wasi-command') return options.wasi?.mode === 'record'
  return stateless ?? guest.stateless
}

/**
 * The runner a stream drives: where the guest runs, wrapped (innermost first) by recovery (per
 * instance), a pool of instances, checkpoint cuts and the deadline. Cuts sit outside recovery so
 * they see only the output of jobs that succeeded; the deadline sits outermost so nothing
 * recovers from it. A wrapper is left out when its option is off: each costs a call per hook.
 */
export function runnerChain(options: RunnerChainOptions): RunnerFactory {
  let factory = isolated[options.isolation]
  const { recovery, snapshots, deadline } = options
  const concurrency = options.concurrency ?? 1
  if (recovery !== 'fail') {
    const inner = factory
    factory = (guest, hooks, runnerOptions) =>
      new RecoveringRunner(inner, guest, hooks, runnerOptions, { strategy: recovery, stateless: isStateless(guest, options.stateless, runnerOptions) })
  }
  if (concurrency === 'auto' || concurrency > 1) {
    const inner = factory
    factory = (guest, hooks, runnerOptions) => {
      const stateless = isStateless(guest, options.stateless, runnerOptions)
      // 'auto' for a guest that keeps state has one answer, and no pool to find it.
      if (concurrency === 'auto' && !stateless) return new FixedConcurrency(inner(guest, hooks, runnerOptions), 'the guest keeps state between chunks')
      return new PoolRunner(inner, guest, hooks, runnerOptions, concurrency, stateless)
    }
  }
  if (snapshots) {
    const inner = factory
    factory = (guest, hooks, runnerOptions) => new SnapshottingRunner(inner, guest, hooks, runnerOptions, snapshots)
  }
  if (deadline !== undefined) {
    const inner = factory
    factory = (guest, hooks, runnerOptions) => new DeadlineRunner(inner, guest, hooks, runnerOptions, deadline)
  }
  return factory
}
