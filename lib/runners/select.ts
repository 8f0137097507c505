import type { Isolation } from '../options.js'
import { InlineRunner } from './inline.js'
import type { RunnerFactory } from './runner.js'
import { WorkerRunner } from './worker.js'

const factories: Record<Isolation, RunnerFactory> = {
  inline: (guest, hooks, options) => new InlineRunner(guest, hooks, options),
  worker: (guest, hooks, options) => new WorkerRunner(guest, hooks, options),
}

/** The runner for an isolation mode. */
export function runnerFor(isolation: Isolation): RunnerFactory {
  return factories[isolation]
}
