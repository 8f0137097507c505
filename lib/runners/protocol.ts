/** The wire protocol between the worker runners (WorkerRunner, the loader) and their threads. */
import { WasmSandboxError, type WasmFrame, type WasmSandboxErrorCode } from '../errors.js'

/** Frames main → worker, in the input ring. */
export const IN_CHUNK = 1
export const IN_FLUSH = 2
export const IN_SNAPSHOT = 3
/** End the session without the guest's flush: it ran no chunk (a pool's spare that came too late). */
export const IN_CLOSE = 4

/** Frames worker → main, in the output ring, in order after the outputs they conclude. */
export const OUT_DATA = 10
export const OUT_DONE = 11
export const OUT_FLUSHED = 12
export const OUT_ERROR = 13
/** The first pieces of a control frame's payload too long for one frame. */
export const OUT_PART = 14
/** Bytes a WASI program wrote to stderr: diagnostics, never output. */
export const OUT_STDERR = 15
/**
 * A `sandbox.log` message (ABI v1.1): H_ARG the level (-1: the host's report of dropped
 * messages), H_SEQ the export (EXPORT_NAMES), H_TOTAL the length before a cut (or the number
 * dropped), the offset slots the input offset; the payload is the message.
 */
export const OUT_LOG = 16

/** Messages worker → main on the port (only to wake a sleeping main thread, and start-up). */
export const MSG_READY = 1
export const MSG_WAKE = 2
export const MSG_SPACE = 3
export const MSG_START_FAILED = 4
/** The guest's state, posted (memory transferred) in answer to IN_SNAPSHOT. */
export const MSG_SNAPSHOT = 5
/** Main → worker: run a session (`{ kind, data: WorkerData }`), one stream's guest instance. */
export const MSG_SESSION = 6

/** The watchdog's view of the worker, in a small SharedArrayBuffer: Int32 slots, then a Float64. */
export const CTL_STATE = 0
export const CTL_EXPORT = 1
export const CTL_OFFSET_LO = 2
export const CTL_OFFSET_HI = 3
export const CTL_BYTES = 32
/** Index in the Float64Array view: when the running call started, minus time spent blocked on the host. */
export const CTL_STARTED_F64 = 2
/** Index in the Float64Array view: total milliseconds spent in guest calls. */
export const CTL_GUEST_MS_F64 = 3

export const STATE_IDLE = 0
export const STATE_RUNNING = 1
/** Blocked until the output ring has room: only the main thread, draining it, moves it on. */
export const STATE_BLOCKED = 2

export const EXPORT_NAMES = ['start', 'init', 'process_chunk', 'flush', '_start', 'alloc', '_initialize'] as const
export const EXPORT_START = 0
export const EXPORT_INIT = 1
export const EXPORT_PROCESS = 2
export const EXPORT_FLUSH = 3
/** A WASI program's `_start`. */
export const EXPORT_WASI_START = 4

/** A clock both threads share (performance.now() has a per-thread origin). */
export function now(): number {
  return performance.timeOrigin + performance.now()
}

/** A WasmSandboxError as it crosses the thread boundary. */
export interface ErrorRecord {
  code: string
  message: string
  offset?: number | undefined
  module?: string | undefined
  exportName?: string | undefined
  status?: number | undefined
  exitCode?: number | undefined
  backtrace?: WasmFrame[] | undefined
}

/** A thrown error as it crosses to the other thread: a WasmSandboxError keeps its code and details. */
export function errorRecord(err: unknown): ErrorRecord {
  if (err instanceof WasmSandboxError) {
    return {
      code: err.code,
      message: err.message,
      offset: err.offset,
      module: err.module,
      exportName: err.exportName,
      status: err.status,
      exitCode: err.exitCode,
      backtrace: err.backtrace?.slice(),
    }
  }
  return { code: 'ERR_WASM_WORKER_DIED', message: String((err as Error)?.stack ?? err) }
}

/** The error an ErrorRecord was made from, on this side of the thread boundary. */
export function revive(record: ErrorRecord): WasmSandboxError {
  return new WasmSandboxError(record.code as WasmSandboxErrorCode, record.message, {
    offset: record.offset,
    module: record.module,
    exportName: record.exportName,
    status: record.status,
    exitCode: record.exitCode,
    ...(record.backtrace ? { backtrace: record.backtrace } : {}),
  })
}
