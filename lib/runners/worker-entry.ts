/**
 * The worker thread's side of WorkerRunner, whatever the guest: the rings, the call clock the
 * main thread's watchdog reads, errors, and loading the driver that runs the guest. It blocks
 * in `Atomics.wait` when it has nothing to do or no room for output, so a slow consumer pauses
 * the guest mid-call.
 *
 * A thread runs one session (one stream's guest instance) at a time, each posted as a message
 * with its own rings; when a session ends cleanly the thread waits for the next (WorkerPool).
 * After a failure it never runs anything again: it parks until it is terminated.
 */
import { parentPort } from 'node:worker_threads'
import type { GuestState } from '../checkpoint/types.js'
import type { LogSink, OutputSink } from '../guest/instance.js'
import type { ChunkHandler, DriverHost, DriverName, WorkerData } from './driver.js'
import {
  CTL_EXPORT,
  CTL_GUEST_MS_F64,
  CTL_OFFSET_HI,
  CTL_OFFSET_LO,
  CTL_STARTED_F64,
  CTL_STATE,
  EXPORT_FLUSH,
  EXPORT_NAMES,
  EXPORT_PROCESS,
  IN_CHUNK,
  IN_CLOSE,
  IN_FLUSH,
  IN_SNAPSHOT,
  MSG_READY,
  MSG_SESSION,
  MSG_SNAPSHOT,
  MSG_SPACE,
  MSG_START_FAILED,
  MSG_WAKE,
  now,
  OUT_DATA,
  OUT_DONE,
  OUT_ERROR,
  OUT_FLUSHED,
  OUT_LOG,
  OUT_PART,
  OUT_STDERR,
  STATE_BLOCKED,
  STATE_IDLE,
  STATE_RUNNING,
  errorRecord,
} from './protocol.js'
import { FrameRing, H_KIND, H_LENGTH, H_TOTAL } from './ring.js'

const DRIVERS: Record<DriverName, string> = {
  'abi-v1': './drivers/abi-v1.js',
  'wasi-stream': './drivers/wasi-stream.js',
  'wasi-record': './drivers/wasi-record.js',
}

const port = parentPort!
const IDLE_WAIT_MS = 1000

/** One stream's guest in this thread: its rings, its call clock and its driver. */
class Session implements DriverHost {
  readonly data: WorkerData
  readonly input: FrameRing
  private readonly output: FrameRing
  private readonly ctl: Int32Array
  private readonly clock: Float64Array
  started = false
  readonly sink: OutputSink
  readonly stderr: OutputSink
  readonly log: LogSink

  constructor(data: WorkerData) {
    this.data = data
    this.input = new FrameRing(data.inSab)
    this.output = new FrameRing(data.outSab)
    // A reused worker gets the rings of its last session back: empty, but not at position 0.
    this.input.reset()
    this.output.reset()
    this.ctl = new Int32Array(data.ctlSab, 0, 4)
    this.clock = new Float64Array(data.ctlSab)
    this.sink = this.frames(OUT_DATA)
    this.stderr = this.frames(OUT_STDERR)
    this.log = {
      message: (level, memory, start, length, cutFrom, site) => this.logFrame(level, site.exportName, cutFrom, site.offset, memory, start, length),
      dropped: (messages, site) => this.logFrame(-1, site.exportName, Math.min(messages, 0x7fffffff), site.offset),
    }
  }

  enter(exportId: number, offset: number): void {
    const ctl = this.ctl
    ctl[CTL_EXPORT] = exportId
    ctl[CTL_OFFSET_LO] = offset % 0x100000000
    ctl[CTL_OFFSET_HI] = Math.floor(offset / 0x100000000)
    this.clock[CTL_STARTED_F64] = now()
    Atomics.store(ctl, CTL_STATE, STATE_RUNNING)
  }

  leave(): void {
    const clock = this.clock
    if (Atomics.load(this.ctl, CTL_STATE) === STATE_RUNNING) clock[CTL_GUEST_MS_F64] = clock[CTL_GUEST_MS_F64]! + now() - clock[CTL_STARTED_F64]!
    Atomics.store(this.ctl, CTL_STATE, STATE_IDLE)
  }

  ready(): void {
    this.started = true
    port.postMessage(MSG_READY)
  }

  postSnapshot(state: GuestState): void {
    port.postMessage({ kind: MSG_SNAPSHOT, state }, [state.memory.buffer as ArrayBuffer])
  }

  nextFrame(): void {
    const input = this.input
    while (!input.peek()) input.waitWhileUsed(0, IDLE_WAIT_MS)
  }

  consumed(): void {
    // Wake a main thread waiting for room only once half the ring is free, so it refills
    // several chunks per wake-up instead of one.
    const input = this.input
    if (input.used() * 2 <= input.capacity && input.wantWake()) port.postMessage(MSG_SPACE)
  }

  /** Writes a control frame; a payload longer than a frame goes ahead in OUT_PART frames. */
  writeFrame(kind: number, payload?: Uint8Array): void {
    const output = this.output
    const length = payload?.length ?? 0
    let start = 0
    for (;;) {
      const part = Math.min(length - start, output.maxPayload)
      const last = start + part === length
      if (!output.fits(part)) this.waitForRoom(part)
      output.write(last ? kind : OUT_PART, 0, 0, 0, 0, payload, start, part)
      // After an error frame this thread parks: a main thread waiting for input room must not
      // wait for the room it will never free.
      const mainWaits = last && kind === OUT_ERROR && this.input.wantWake()
      if (output.wantWake() || mainWaits || !this.started) port.postMessage(MSG_WAKE)
      start += part
      if (last) return
    }
  }

  /**
   * The frame loop for guests driven a chunk at a time: each chunk's frames are copied straight
   * from the ring into the guest's input region, then one call processes it. Returns once the
   * end of input is flushed.
   */
  serveChunks(handler: ChunkHandler): void {
    const input = this.input
    const header = input.header
    let filled = 0
    let region = 0
    for (;;) {
      this.nextFrame()
      const kind = header[H_KIND]
      if (kind === IN_CHUNK) {
        const total = header[H_TOTAL]!
        const offset = input.offsetOfFrame()
        if (filled === 0) {
          this.enter(EXPORT_PROCESS, offset)
          region = handler.region(total, offset)
          this.leave()
        }
        input.copyPayload(handler.memory(), region + filled)
        filled += header[H_LENGTH]!
        // Running before the chunk's last frame leaves the ring: a main thread that sees neither
        // input queued nor a guest running lets go of the process (worker.ts, mayMoveOn).
        if (filled === total) this.enter(EXPORT_PROCESS, offset)
        input.consume()
        this.consumed()
        if (filled === total) {
          filled = 0
          handler.process(total, offset)
          this.leave()
          this.writeFrame(OUT_DONE)
        }
      } else if (kind === IN_SNAPSHOT) {
        input.consume()
        try {
          this.postSnapshot(handler.snapshot())
        } catch (err) {
          port.postMessage({ kind: MSG_SNAPSHOT, error: errorRecord(err) })
        }
      } else if (kind === IN_FLUSH) {
        const offset = input.offsetOfFrame()
        this.enter(EXPORT_FLUSH, offset)
        input.consume()
        handler.flush(offset)
        this.leave()
        this.writeFrame(OUT_FLUSHED)
        return
      } else if (kind === IN_CLOSE) {
        input.consume()
        this.writeFrame(OUT_FLUSHED)
        return
      } else {
        throw new Error(`internal: unknown frame kind ${kind}`)
      }
    }
  }

  /** Blocks until the output ring has room; the wait is the consumer's, not the guest's, time. */
  private waitForRoom(payload: number): void {
    const { ctl, clock, output } = this
    // The main thread may sleep until half the input is consumed: it must drain this ring first.
    const mainWaits = this.input.wantWake()
    if (output.wantWake() || mainWaits) port.postMessage(MSG_WAKE)
    const running = Atomics.load(ctl, CTL_STATE) === STATE_RUNNING
    const elapsed = now() - clock[CTL_STARTED_F64]!
    Atomics.store(ctl, CTL_STATE, STATE_BLOCKED)
    while (!output.fits(payload)) {
      const used = output.used()
      if (!output.fits(payload)) output.waitWhileUsed(used, IDLE_WAIT_MS)
    }
    if (running) clock[CTL_STARTED_F64] = now() - elapsed
    Atomics.store(ctl, CTL_STATE, running ? STATE_RUNNING : STATE_IDLE)
  }

  /**
   * A log message is at most LOG_LIMITS.messageBytes: one frame, whatever the ring. Before `ready`
   * the main thread does not read the ring, so a frame that does not fit then is dropped instead
   * of waited for (the per-call limits keep start-up's messages under the smallest ring anyway).
   */
  private logFrame(level: number, exportName: string, count: number, offset: number, memory?: Uint8Array, start = 0, length = 0): void {
    const output = this.output
    if (!output.fits(length)) {
      if (!this.started) return
      this.waitForRoom(length)
    }
    output.write(OUT_LOG, EXPORT_NAMES.indexOf(exportName as (typeof EXPORT_NAMES)[number]), count, offset, level, memory, start, length)
    if (output.wantWake() || !this.started) port.postMessage(MSG_WAKE)
  }

  /**
   * Output frames wake the main thread when it sleeps on the ring, and always before the session
   * is ready: the main thread reads the ring only once woken, and a reactor may fill it in
   * `_initialize` (it then waits here for room, untimed, for good).
   */
  private frames(kind: number): OutputSink {
    const output = this.output
    return (memory, start, length) => {
      while (length > 0) {
        const part = Math.min(length, output.maxPayload)
        if (!output.fits(part)) this.waitForRoom(part)
        output.write(kind, 0, 0, 0, 0, memory, start, part)
        if (output.wantWake() || !this.started) port.postMessage(MSG_WAKE)
        start += part
        length -= part
      }
    }
  }
}

/** After a failure the instance is gone: wait here until the main thread terminates us. */
const parking = new Int32Array(new SharedArrayBuffer(4))
function idleForever(): never {
  for (;;) Atomics.wait(parking, 0, 0)
}

async function runSession(data: WorkerData): Promise<void> {
  const session = new Session(data)
  try {
    const driver = (await import(DRIVERS[data.driver])) as { serve(host: DriverHost): void | Promise<void> }
    await driver.serve(session)
  } catch (err) {
    session.leave()
    if (session.started) session.writeFrame(OUT_ERROR, Buffer.from(JSON.stringify(errorRecord(err))))
    else port.postMessage({ kind: MSG_START_FAILED, error: errorRecord(err) })
    idleForever()
  }
}

port.on('message', (message: { kind?: number; data?: WorkerData }) => {
  if (message?.kind === MSG_SESSION) void runSession(message.data!)
})
