/**
 * What a guest kind plugs into the worker thread. The thread's host (worker-entry.ts) owns the
 * rings, the call clock the watchdog reads and error reporting; a driver owns one guest
 * instance and how frames turn into calls on it. ABI v1 is one driver; a WASI program is
 * another. A driver module exports `serve(host)`, which returns once the session's end of input
 * is flushed (the thread may then run another session) and throws the guest's failure.
 */
import type { GuestState } from '../checkpoint/types.js'
import type { InstanceLimits, LogSink, OutputSink } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import type { FrameRing } from './ring.js'
import type { WasiConfig } from '../wasi/options.js'

/** Everything a session is started with; `driver` names the module that runs the guest. */
export interface WorkerData {
  driver: DriverName
  guest: LoadedGuest
  /** A saved state to restore in place of `init`. */
  restore: GuestState | undefined
  bufferSize: number
  limits: InstanceLimits
  /** What a WASI program may see (WASI drivers only). */
  wasi: WasiConfig | undefined
  /** `guestConfig`, for `sandbox.config_read` (ABI v1.1). */
  guestConfig: Uint8Array | undefined
  inSab: SharedArrayBuffer
  outSab: SharedArrayBuffer
  ctlSab: SharedArrayBuffer
}

export type DriverName = 'abi-v1' | 'wasi-stream' | 'wasi-record'

/** The thread's services, as a driver sees them. */
export interface DriverHost {
  readonly data: WorkerData
  readonly input: FrameRing
  /** Copies a range of guest memory to the output ring as data frames (blocks while it is full). */
  readonly sink: OutputSink
  /** Copies a range of guest memory to the output ring as stderr frames (diagnostics). */
  readonly stderr: OutputSink
  /** Sends `sandbox.log` messages (ABI v1.1) to the main thread as log frames, in order with output. */
  readonly log: LogSink
  /** A guest call begins (`exportId` from protocol.ts): the watchdog times it from here. */
  enter(exportId: number, offset: number): void
  /** The guest call ended. */
  leave(): void
  /** Start-up is done: the main thread may send work. */
  ready(): void
  /** Writes a control frame to the output ring, in order after the data before it. */
  writeFrame(kind: number, payload?: Uint8Array): void
  /** Posts the guest's state (its memory is transferred). */
  postSnapshot(state: GuestState): void
  /** Blocks until the input ring has a frame; its header is then in `input.header`. */
  nextFrame(): void
  /** Tells a main thread waiting for input room that some was freed. */
  consumed(): void
  /** Runs the chunk-at-a-time frame loop over `handler` until the end of input is flushed (a throw is the guest's failure). */
  serveChunks(handler: ChunkHandler): void
}

/** The chunk-at-a-time loop both ABI v1 and per-record guests share. */
export interface ChunkHandler {
  /** Makes room for a `total`-byte chunk; returns where in `memory()` its bytes go. */
  region(total: number, offset: number): number
  memory(): Uint8Array
  process(total: number, offset: number): void
  flush(offset: number): void
  snapshot(): GuestState
}
