/**
 * The worker side of WorkerRunner: one guest instance, fed chunks from the input ring, writing
 * output and completions to the output ring. It blocks in `Atomics.wait` when it has nothing to
 * do or no room for output, so a slow consumer pauses the guest mid-call. The main thread's
 * watchdog reads the call state in `ctl` and terminates this thread when a call overruns.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { WasmSandboxError } from '../errors.js'
import { GuestInstance, type InstanceLimits, type OutputSink } from '../guest/instance.js'
import type { GuestState } from '../checkpoint/types.js'
import type { LoadedGuest } from '../guest/load.js'
import {
  CTL_EXPORT,
  CTL_GUEST_MS_F64,
  CTL_OFFSET_HI,
  CTL_OFFSET_LO,
  CTL_STARTED_F64,
  CTL_STATE,
  EXPORT_FLUSH,
  EXPORT_INIT,
  EXPORT_PROCESS,
  EXPORT_START,
  IN_CHUNK,
  IN_FLUSH,
  IN_SNAPSHOT,
  MSG_READY,
  MSG_SNAPSHOT,
  MSG_SPACE,
  MSG_START_FAILED,
  MSG_WAKE,
  now,
  OUT_DATA,
  OUT_DONE,
  OUT_ERROR,
  OUT_FLUSHED,
  OUT_PART,
  STATE_IDLE,
  STATE_RUNNING,
  type ErrorRecord,
} from './protocol.js'
import { FrameRing, H_KIND, H_LENGTH, H_TOTAL } from './ring.js'

export interface WorkerData {
  guest: LoadedGuest
  /** A saved state to restore in place of `init`. */
  restore: GuestState | undefined
  bufferSize: number
  limits: InstanceLimits
  inSab: SharedArrayBuffer
  outSab: SharedArrayBuffer
  ctlSab: SharedArrayBuffer
}

const data = workerData as WorkerData
const port = parentPort!
const input = new FrameRing(data.inSab)
const output = new FrameRing(data.outSab)
const ctl = new Int32Array(data.ctlSab, 0, 4)
const clock = new Float64Array(data.ctlSab)
const IDLE_WAIT_MS = 1000

function enter(exportId: number, offset: number): void {
  ctl[CTL_EXPORT] = exportId
  ctl[CTL_OFFSET_LO] = offset % 0x100000000
  ctl[CTL_OFFSET_HI] = Math.floor(offset / 0x100000000)
  clock[CTL_STARTED_F64] = now()
  Atomics.store(ctl, CTL_STATE, STATE_RUNNING)
}

function leave(): void {
  if (Atomics.load(ctl, CTL_STATE) === STATE_RUNNING) clock[CTL_GUEST_MS_F64] = clock[CTL_GUEST_MS_F64]! + now() - clock[CTL_STARTED_F64]!
  Atomics.store(ctl, CTL_STATE, STATE_IDLE)
}

/** Blocks until the output ring has room; the wait is the consumer's, not the guest's, time. */
function waitForRoom(payload: number): void {
  const running = Atomics.load(ctl, CTL_STATE) === STATE_RUNNING
  const elapsed = now() - clock[CTL_STARTED_F64]!
  if (running) Atomics.store(ctl, CTL_STATE, STATE_IDLE)
  while (!output.fits(payload)) {
    const used = output.used()
    if (!output.fits(payload)) output.waitWhileUsed(used, IDLE_WAIT_MS)
  }
  if (running) {
    clock[CTL_STARTED_F64] = now() - elapsed
    Atomics.store(ctl, CTL_STATE, STATE_RUNNING)
  }
}

/** Writes a control frame; a payload longer than a frame goes ahead in OUT_PART frames. */
function writeFrame(kind: number, payload?: Uint8Array): void {
  const length = payload?.length ?? 0
  let start = 0
  for (;;) {
    const part = Math.min(length - start, output.maxPayload)
    const last = start + part === length
    if (!output.fits(part)) waitForRoom(part)
    output.write(last ? kind : OUT_PART, 0, 0, 0, 0, payload, start, part)
    if (output.wantWake()) port.postMessage(MSG_WAKE)
    start += part
    if (last) return
  }
}

const sink: OutputSink = (memory, start, length) => {
  while (length > 0) {
    const part = Math.min(length, output.maxPayload)
    if (!output.fits(part)) waitForRoom(part)
    output.write(OUT_DATA, 0, 0, 0, 0, memory, start, part)
    if (output.wantWake()) port.postMessage(MSG_WAKE)
    start += part
    length -= part
  }
}

function record(err: unknown): ErrorRecord {
  if (err instanceof WasmSandboxError) {
    return {
      code: err.code,
      message: err.message,
      offset: err.offset,
      module: err.module,
      exportName: err.exportName,
      status: err.status,
    }
  }
  return { code: 'ERR_WASM_WORKER_DIED', message: String((err as Error)?.stack ?? err) }
}

/** After a failure the instance is gone; wait here until the main thread terminates us. */
const parking = new Int32Array(new SharedArrayBuffer(4))
function idleForever(): never {
  for (;;) Atomics.wait(parking, 0, 0)
}

function startInstance(): GuestInstance {
  enter(EXPORT_START, 0)
  const instance = new GuestInstance(data.guest, sink, data.limits)
  enter(EXPORT_INIT, 0)
  if (data.restore) instance.restore(data.restore)
  else instance.init()
  enter(EXPORT_PROCESS, 0)
  instance.reserve(data.bufferSize)
  leave()
  return instance
}

function serve(instance: GuestInstance): void {
  const header = input.header
  let filled = 0
  let region = 0
  for (;;) {
    if (!input.peek()) {
      input.waitWhileUsed(0, IDLE_WAIT_MS)
      continue
    }
    const kind = header[H_KIND]
    if (kind === IN_CHUNK) {
      const total = header[H_TOTAL]!
      const offset = input.offsetOfFrame()
      if (filled === 0) {
        enter(EXPORT_PROCESS, offset)
        region = instance.inputRegion(total, offset)
        leave()
      }
      input.copyPayload(instance.memoryView(), region + filled)
      filled += header[H_LENGTH]!
      input.consume()
      // Wake a main thread waiting for room only once half the ring is free, so it refills
      // several chunks per wake-up instead of one.
      if (input.used() * 2 <= input.capacity && input.wantWake()) port.postMessage(MSG_SPACE)
      if (filled === total) {
        filled = 0
        enter(EXPORT_PROCESS, offset)
        instance.processRegion(total, offset)
        leave()
        writeFrame(OUT_DONE)
      }
    } else if (kind === IN_SNAPSHOT) {
      input.consume()
      try {
        const state = instance.snapshot()
        port.postMessage({ kind: MSG_SNAPSHOT, state }, [state.memory.buffer as ArrayBuffer])
      } catch (err) {
        port.postMessage({ kind: MSG_SNAPSHOT, error: record(err) })
      }
    } else if (kind === IN_FLUSH) {
      const offset = input.offsetOfFrame()
      input.consume()
      enter(EXPORT_FLUSH, offset)
      instance.flush(offset)
      leave()
      writeFrame(OUT_FLUSHED)
    } else {
      throw new Error(`internal: unknown frame kind ${kind}`)
    }
  }
}

let instance: GuestInstance
try {
  instance = startInstance()
  port.postMessage(MSG_READY)
} catch (err) {
  leave()
  port.postMessage({ kind: MSG_START_FAILED, error: record(err) })
  idleForever()
}
try {
  serve(instance)
} catch (err) {
  leave()
  writeFrame(OUT_ERROR, Buffer.from(JSON.stringify(record(err))))
  idleForever()
}
