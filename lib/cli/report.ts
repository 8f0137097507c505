import { isWasmSandboxError } from '../errors.js'
import { inFlags, UsageError } from './options.js'

/** Exit statuses, as documented in the README and `--help`. */
export const EXIT = {
  ok: 0,
  /** The run failed: a guest error, a limit, an I/O error; `inspect`: the module would be refused. */
  failed: 1,
  /** A mistake on the command line. */
  usage: 2,
} as const

const hints = new WeakMap<object, string>()

/** A line to print after the error: what the user can do next. */
export function addHint(err: unknown, hint: string): void {
  if (typeof err === 'object' && err !== null) hints.set(err, hint)
}

/** Prints what went wrong on standard error and returns the exit status for it. */
export function report(err: unknown): number {
  const e = err as Error & { code?: string; exitCode?: number }
  const say = (line: string): void => void process.stderr.write(`wasm-sandbox: ${line}\n`)
  let status: number
  if (err instanceof UsageError || (isWasmSandboxError(err) && err.code === 'ERR_WASM_INVALID_OPTION')) {
    // One line saying what to change.
    say(inFlags(e.message))
    status = EXIT.usage
  } else if (e?.code === 'EPIPE') {
    // A reader that closed early (| head) is not a failure of ours.
    status = EXIT.ok
  } else if (e?.code === 'ERR_WASM_EXIT' && e.exitCode) {
    // A WASI program's own exit status, as if it had been run directly; its stderr is already out.
    say(`${e.code}: the program exited with status ${e.exitCode}`)
    status = Math.min(e.exitCode, 255)
  } else {
    // "Raise limits.deadline": the user typed --deadline.
    say(`${isWasmSandboxError(e) ? `${e.code}: ${inFlags(e.message)}` : (e?.message ?? String(err))}`)
    status = EXIT.failed
  }
  const hint = typeof err === 'object' && err !== null ? hints.get(err) : undefined
  if (hint) say(hint)
  return status
}
