/**
 * The command's first step: the worker thread a run will use starts booting on another core
 * while this thread loads the rest of the tool (commander, the streams libraries: about 0.15 s).
 * A guess from the arguments; a wrong one costs an idle thread that ends by itself.
 */
import { sharedWorkerPool } from '../runners/worker-pool.js'

const NO_WORKER = new Set(['--inline', '-h', '--help', '-V', '--version', 'inspect', 'help'])

/** Whether `argv` (the command's own arguments) will run a guest in a worker. */
export function runsInWorker(argv: readonly string[]): boolean {
  const end = argv.indexOf('--')
  const ours = end === -1 ? argv : argv.slice(0, end)
  return ours.length > 0 && !ours.some((arg) => NO_WORKER.has(arg))
}

export function prestartWorker(argv: readonly string[]): void {
  if (runsInWorker(argv)) sharedWorkerPool().prestart()
}
