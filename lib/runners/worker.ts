import type { Worker } from 'node:worker_threads'
import { errors, type GuestSite, type WasmSandboxError } from '../errors.js'
import type { GuestState } from '../checkpoint/types.js'
import { droppedEntry, logEntry } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import { logger } from '../log.js'
import {
  CTL_BYTES,
  CTL_EXPORT,
  CTL_GUEST_MS_F64,
  CTL_OFFSET_HI,
  CTL_OFFSET_LO,
  CTL_STARTED_F64,
  CTL_STATE,
  EXPORT_NAMES,
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
  STATE_IDLE,
  STATE_RUNNING,
  revive,
  type ErrorRecord,
} from './protocol.js'
import { FRAME_HEADER, FrameRing, H_ARG, H_KIND, H_LENGTH, H_SEQ, H_TOTAL, MAX_RING_CAPACITY } from './ring.js'
import type { DriverName, WorkerData } from './driver.js'
import type { GuestRunner, Job, RunnerCallback, RunnerHooks, RunnerOptions } from './runner.js'
import { sharedWorkerPool, type WorkerPool } from './worker-pool.js'

const log = logger('worker')

/** The rings a worker's sessions use, kept with the worker while it lives. */
interface Rings {
  inCapacity: number
  outCapacity: number
  input: FrameRing
  output: FrameRing
  ctlSab: SharedArrayBuffer
}
const ringsOf = new WeakMap<Worker, Rings>()
/** Whose output a WASI program writes before it has been sent any input (a banner). */
const BEFORE_INPUT: Job = { offset: 0, input: Buffer.alloc(0) }

/** The smallest output frame a ring is sized for. */
const MIN_OUTPUT_FRAME = 16 * 1024

interface PendingWrite {
  kind: number
  chunk: Buffer | null
  pos: number
  offset: number
  callback: RunnerCallback
}

/**
 * Ring bytes for `depth` chunks of `chunk` bytes, and at least two of the `largest` a stream may
 * send, capped: a chunk larger than a ring's frame crosses in several frames, so a huge
 * bufferSize needs no huge ring (and never a size that overflows 32-bit ring arithmetic).
 */
function ringCapacity(depth: number, chunk: number, largest: number): number {
  return Math.min(MAX_RING_CAPACITY, Math.max(depth * (chunk + 2 * FRAME_HEADER), 2 * (largest + 2 * FRAME_HEADER)))
}

/**
 * Runs the guest in a worker thread: the default, for untrusted guests. Chunks go in through a
 * bounded SharedArrayBuffer ring and output comes back through another, so nothing is
 * structured-cloned; the worker blocks when the output ring is full, which pauses the guest
 * mid-call while the consumer is slow. A watchdog terminates a call that runs past
 * `options.timeout`. The worker comes from a WorkerPool: it goes back there once the guest's
 * flush is done, and is terminated on failure and on destroy, so a thread is reused only after a
 * clean end, and never with anything of the last guest in it but the compiled module.
 */
export class WorkerRunner implements GuestRunner {
  private readonly guest: LoadedGuest
  private readonly hooks: RunnerHooks
  private readonly options: RunnerOptions
  private readonly driver: DriverName
  private readonly pool: WorkerPool
  private worker: Worker | undefined
  /** Withdraws a start still waiting for a worker. */
  private cancelWait: (() => void) | undefined
  private readonly onWorkerMessage = (message: unknown): void => this.onMessage(message)
  private readonly onWorkerError = (err: Error): void => this.onDeath(err)
  private readonly onWorkerExit = (code: number): void => this.onDeath(new Error(`worker exited with code ${code}`))
  /** Jobs sent to the worker and not yet done, oldest first: output frames belong to the first. */
  private readonly sent: Job[] = []
  /**
   * The job sent last. A WASI program in stream mode reports a chunk done once it has read it
   * and writes what it made of it after, when no job may be outstanding: that output is the
   * last chunk's.
   */
  private lastSent: Job | undefined
  private input: FrameRing | undefined
  private output: FrameRing | undefined
  private ctl: Int32Array | undefined
  private clock: Float64Array | undefined
  private watchdog: NodeJS.Timeout | undefined
  private startCallback: RunnerCallback | undefined
  private snapshotCallback: ((err: Error | null, state?: GuestState) => void) | undefined
  /** `close` waits for the session's end. */
  private closeCallback: RunnerCallback | undefined
  private pending: PendingWrite | undefined
  private paused = false
  /** Chunks, start-up, flush or snapshot the worker owes an answer for; idle at 0. */
  private outstanding = 0
  /** Whether the worker's thread is ref'd: see `holdProcess`. */
  private holding = false
  /** Pieces of a control payload (an error record) that spans several frames. */
  private parts: Buffer[] = []
  private draining = false
  /** The check that runs once the event loop is idle; see `settleLater`. */
  private idle: NodeJS.Immediate | undefined
  private readonly onIdle = (): void => this.settle()
  /** Asks for output while the input waits for room; see `askForOutput`. */
  private outputDue: NodeJS.Timeout | undefined
  private readonly onOutputDue = (): void => this.askForOutput(true)
  private drainAgain = false
  private destroyed = false
  /** Guest time of the workers this runner has already replaced. */
  private pastGuestMs = 0

  constructor(guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions, driver: DriverName = 'abi-v1') {
    this.guest = guest
    this.hooks = hooks
    this.options = options
    this.driver = driver
    this.pool = options.workers ?? sharedWorkerPool()
  }

  start(callback: RunnerCallback, restore?: GuestState): void {
    this.startIn(callback, restore, !this.options.spareWorker)
  }

  /**
   * A pool's extra instance takes a worker at its first start only if one is free at once; a
   * restart (recovery replacing the worker it lost) waits for one: at a sandbox's `maxWorkers`
   * the lost worker is still counted until its thread has exited, and the restart found none
   * free, failing the stream with ERR_WASM_NO_INSTANCE instead of skipping or retrying the chunk.
   */
  private startIn(callback: RunnerCallback, restore: GuestState | undefined, wait: boolean): void {
    this.paused = false
    this.pending = undefined
    this.parts = []
    this.sent.length = 0
    this.lastSent = undefined
    this.startCallback = callback
    this.outstanding = 0
    let answered = false
    const cancel = this.pool.acquire((err, worker) => {
      answered = true
      this.cancelWait = undefined
      if (err) this.finishStart(errors.workerDied(this.site(), err))
      else if (!worker) this.finishStart(errors.noInstance(this.site()))
      else this.begin(worker, restore)
    }, wait)
    // An answer given at once may have started over (recovery after a failed start), with a
    // wait of its own to cancel on destroy: this one's is spent.
    if (!answered) this.cancelWait = cancel
  }

  /**
   * The rings of a session in `worker`: the ones its last session used when they are the right
   * size (a reused worker then allocates nothing, and its isolate keeps no old rings alive until
   * it next collects garbage), else new ones, kept with the worker for its next session.
   */
  private ringsFor(worker: Worker): Rings {
    const { bufferSize, maxInFlight } = this.options
    // Sized for the chunks the stream starts with: with 'auto' sizes, rings made for 32 chunks
    // of the largest size were 16 MiB a side, all of it streamed through the caches.
    const chunkSize = this.options.chunkSize ?? bufferSize
    const inCapacity = ringCapacity(maxInFlight, chunkSize, bufferSize)
    // As deep as the input side, so the worker can run ahead by as many chunks as it is given;
    // no deeper: what sits here is output the consumer has not asked for. Never tiny, though:
    // small chunks (sandbox.call on a short input) may have far more output than input, and a
    // ring of a few bytes turns every small write into a wake-up of each thread.
    const outCapacity = ringCapacity(maxInFlight + 1, Math.max(chunkSize, MIN_OUTPUT_FRAME), Math.max(bufferSize, MIN_OUTPUT_FRAME))
    const kept = ringsOf.get(worker)
    if (kept && kept.inCapacity === inCapacity && kept.outCapacity === outCapacity) {
      // The rings are emptied by the worker as its session starts (it may still be finishing a
      // wake-up check on them now); the call clock is ours to zero.
      new Int32Array(kept.ctlSab).fill(0)
      new Float64Array(kept.ctlSab).fill(0)
      return kept
    }
    const rings = { inCapacity, outCapacity, input: new FrameRing(inCapacity), output: new FrameRing(outCapacity), ctlSab: new SharedArrayBuffer(CTL_BYTES) }
    rings.input.lazyWake = true
    ringsOf.set(worker, rings)
    return rings
  }

  /** A worker is ours: the session starts in it. */
  private begin(worker: Worker, restore: GuestState | undefined): void {
    let data: WorkerData
    try {
      const rings = this.ringsFor(worker)
      this.input = rings.input
      this.output = rings.output
      this.ctl = new Int32Array(rings.ctlSab, 0, 4)
      this.clock = new Float64Array(rings.ctlSab)
      // A restored memory is copied for the worker: the caller's checkpoint stays intact.
      data = {
        driver: this.driver,
        guest: this.guest,
        restore,
        bufferSize: this.options.bufferSize,
        limits: this.options.limits,
        wasi: this.options.wasi,
        guestConfig: this.options.guestConfig,
        inSab: rings.input.sab,
        outSab: rings.output.sab,
        ctlSab: rings.ctlSab,
      }
    } catch (err) {
      this.pool.discard(worker)
      this.finishStart(errors.workerDied(this.site(), err))
      return
    }
    this.worker = worker
    this.busy(+1)
    worker.on('message', this.onWorkerMessage)
    worker.on('error', this.onWorkerError)
    worker.on('exit', this.onWorkerExit)
    worker.postMessage({ kind: MSG_SESSION, data })
    const every = Math.min(100, Math.max(5, Math.floor(this.options.timeout / 20)))
    this.watchdog = setInterval(() => this.checkTime(), every)
    this.watchdog.unref()
    log('session in worker %d for %s', worker.threadId, this.guest.name)
  }

  process(job: Job, callback: RunnerCallback): void {
    if (!this.worker || this.startCallback) {
      this.hooks.failed(job, errors.noInstance({ ...this.site(), exportName: job.input ? 'process_chunk' : 'flush', offset: job.offset }))
      callback(null)
      return
    }
    this.busy(+1)
    this.sent.push(job)
    this.lastSent = job
    this.pending = { kind: job.input ? IN_CHUNK : IN_FLUSH, chunk: job.input, pos: 0, offset: job.offset, callback }
    this.writePending()
    this.settleLater()
  }

  snapshot(callback: (err: Error | null, state?: GuestState) => void): void {
    if (!this.worker) {
      callback(errors.noInstance({ ...this.site(), exportName: 'snapshot' }))
      return
    }
    this.snapshotCallback = callback
    this.sendControl(IN_SNAPSHOT)
  }

  resume(): void {
    if (!this.paused) return
    this.paused = false
    this.holdProcess()
    this.drain()
    this.settleLater()
  }

  guestTimeMs(): number {
    return this.pastGuestMs + (this.clock?.[CTL_GUEST_MS_F64] ?? 0)
  }

  restart(callback: RunnerCallback, restore?: GuestState): void {
    this.kill()
    this.startIn(callback, restore, true)
  }

  destroy(): void {
    this.destroyed = true
    this.kill()
    // Every method calls back once: a start or snapshot still waiting learns the instance is gone.
    const start = this.startCallback
    const snapshot = this.snapshotCallback
    const closed = this.closeCallback
    this.startCallback = this.snapshotCallback = this.closeCallback = undefined
    const gone = (): WasmSandboxError => errors.noInstance({ module: this.guest.name, exportName: start ? 'start' : 'snapshot', offset: 0 })
    start?.(gone())
    snapshot?.(gone())
    // Closed all the same, if not for reuse.
    closed?.(null)
  }

  close(callback: RunnerCallback): void {
    if (!this.worker || this.startCallback || this.sent.length > 0 || this.pending || this.closeCallback) {
      this.destroy()
      callback(null)
      return
    }
    this.closeCallback = callback
    this.sendControl(IN_CLOSE)
  }

  /** A frame without payload, answered by a message or a frame of its own (not a job). */
  private sendControl(kind: number): void {
    this.busy(+1)
    this.pending = { kind, chunk: null, pos: 0, offset: 0, callback: noop }
    this.writePending()
    this.settleLater()
  }

  private site(): GuestSite {
    const ctl = this.ctl
    if (!ctl) return { module: this.guest.name, exportName: 'start', offset: 0 }
    const offset = (ctl[CTL_OFFSET_HI]! >>> 0) * 0x100000000 + (ctl[CTL_OFFSET_LO]! >>> 0)
    return { module: this.guest.name, exportName: EXPORT_NAMES[ctl[CTL_EXPORT]!] ?? 'process_chunk', offset }
  }

  /** Copies as much of the pending chunk into the input ring as fits; calls back once all is in. */
  private writePending(): void {
    const p = this.pending
    const input = this.input
    if (!p || !input) return
    const length = p.chunk?.length ?? 0
    do {
      const part = Math.min(length - p.pos, input.maxPayload)
      if (!input.fits(part)) {
        input.sleep()
        if (!input.fits(part)) {
          // Part of the chunk is in: the worker has input to take, and the rest waits for room.
          this.holdProcess()
          return
        }
        input.awake()
      }
      input.write(p.kind, 0, length, p.offset, 0, p.chunk ?? undefined, p.pos, part)
      p.pos += part
    } while (p.pos < length)
    this.pending = undefined
    // Decided as the job went out, before it was in the ring: look again now it is there.
    this.holdProcess()
    // Collect any output while here: a busy main thread then rarely needs a wake-up message.
    this.drain()
    p.callback(null)
  }

  private onMessage(message: unknown): void {
    if (message === MSG_WAKE || message === MSG_SPACE) {
      this.writePending()
      this.drain()
      this.settleLater()
    }
    else if (message === MSG_READY) this.finishStart(null)
    else if ((message as { kind?: number })?.kind === MSG_SNAPSHOT) {
      const { state, error } = message as { state?: GuestState; error?: ErrorRecord }
      const callback = this.snapshotCallback
      this.snapshotCallback = undefined
      this.busy(-1)
      if (error) callback?.(revive(error))
      else callback?.(null, { ...state!, memory: new Uint8Array(state!.memory.buffer, state!.memory.byteOffset, state!.memory.byteLength) })
    } else if ((message as { kind?: number })?.kind === MSG_START_FAILED) {
      this.kill()
      this.finishStart(revive((message as { error: ErrorRecord }).error))
    }
  }

  /**
   * A worker keeps the process alive only while it has work: an idle one (a stream waiting for
   * input, or one abandoned without end or destroy) must not stop the process from exiting.
   */
  private busy(delta: number): void {
    this.outstanding += delta
    this.holdProcess()
  }

  /**
   * Nor does one whose output waits for a consumer that has stopped reading, once its worker can
   * do nothing more without it: only the consumer can move the stream on then, and it is kept
   * alive by something else or never reads again (a native Transform with a full buffer lets the
   * process exit just the same). Until then it holds on: a guest still running, or with input
   * left to take, may yet fail, and that error (a timeout) is the stream's to report. The
   * watchdog looks again at each tick, since the worker gets there without a word to this thread.
   */
  private holdProcess(): void {
    const hold = this.mayMoveOn()
    if (hold === this.holding) return
    this.holding = hold
    if (hold) this.worker?.ref()
    else this.worker?.unref()
  }

  private mayMoveOn(): boolean {
    // The case of every chunk of a stream being read, decided without touching the control block.
    if (this.outstanding > 0 && !this.paused) return true
    // Input first: the worker marks itself running before it takes a chunk's last frame, so no
    // input left and then no guest running means it waits for more, or for room to write.
    const queued = this.input?.used() ?? 0
    const state = this.ctl ? Atomics.load(this.ctl, CTL_STATE) : STATE_IDLE
    // A WASI program in stream mode may still be working once every chunk it read is answered.
    if (state === STATE_RUNNING) return true
    if (this.outstanding === 0) return false
    // Idle: it takes what is queued, and a write waiting for room is woken by its message.
    return state === STATE_IDLE && (queued > 0 || this.pending !== undefined)
  }

  private pause(): void {
    this.paused = true
    this.holdProcess()
  }

  private finishStart(err: WasmSandboxError | null): void {
    if (!err) this.busy(-1)
    const callback = this.startCallback
    this.startCallback = undefined
    callback?.(err)
    if (!err) {
      this.drain()
      this.settleLater()
    }
  }

  /**
   * Wake-ups cost both threads tens of microseconds, more than a fast guest's chunk, so the main
   * thread asks for them only when it has nothing else to do: the worker is woken for new input
   * once the ring is half full or here, and asked to post a message for output only here. Until
   * then the output is collected as each chunk is written. A stream fed continuously so needs no
   * messages at all; one that pauses gets its output when the event loop next turns.
   */
  private settleLater(): void {
    if (this.idle === undefined && this.worker) this.idle = setImmediate(this.onIdle)
  }

  private settle(): void {
    this.idle = undefined
    const { input, output } = this
    if (!input || !output) return
    input.wakeReader()
    this.writePending()
    this.drain()
    this.askForOutput(false)
  }

  /**
   * Asks the worker to post a message when it writes output. While the pending input waits for
   * room, not at once: the worker then wakes this thread at half a ring, and each chunk's output
   * would cost a message of its own (it also wakes it before it blocks on a full output ring, so
   * nothing waits on both sides). A millisecond later it does, so a slow chunk does not hold
   * back the output of the chunks before it.
   */
  private askForOutput(evenIfWaitingForRoom: boolean): void {
    const output = this.output
    if (!evenIfWaitingForRoom && (this.pending || this.sent.length >= this.options.maxInFlight)) {
      // maxInFlight jobs out and none pending: the caller holds the next until one is done (a
      // pool does). That is waiting for room too, counted in jobs, and is woken the same way.
      if (!this.pending) this.input?.sleep()
      if (this.outputDue) this.outputDue.refresh()
      else this.outputDue = setTimeout(this.onOutputDue, 1).unref()
      return
    }
    while (!this.paused && output && this.output === output) {
      output.sleep()
      if (!output.peek()) return
      output.awake()
      this.drain()
    }
  }

  /** Reads output frames until the ring is empty or the consumer is full. */
  private drain(): void {
    if (this.draining) {
      this.drainAgain = true
      return
    }
    this.draining = true
    try {
      do {
        this.drainAgain = false
        this.drainFrames()
      } while (this.drainAgain)
    } finally {
      this.draining = false
    }
  }

  private drainFrames(): void {
    const output = this.output
    if (!output) return
    const header = output.header
    while (!this.paused && this.output === output) {
      if (!output.peek()) return
      const kind = header[H_KIND]
      if (kind === OUT_DATA) {
        const chunk = Buffer.allocUnsafe(header[H_LENGTH]!)
        output.copyPayload(chunk, 0)
        output.consume()
        if (!this.hooks.output(this.sent[0] ?? this.lastSent ?? BEFORE_INPUT, chunk)) this.pause()
      } else if (kind === OUT_STDERR) {
        const chunk = Buffer.allocUnsafe(header[H_LENGTH]!)
        output.copyPayload(chunk, 0)
        output.consume()
        if (this.hooks.stderr?.(chunk) === false) this.pause()
      } else if (kind === OUT_DONE) {
        output.consume()
        this.busy(-1)
        this.hooks.done(this.sent.shift()!)
      } else if (kind === OUT_FLUSHED) {
        output.consume()
        // The guest has ended cleanly: its worker may run the next stream's guest.
        this.release()
        const closed = this.closeCallback
        this.closeCallback = undefined
        if (closed) closed(null)
        else this.hooks.done(this.sent.shift()!)
      } else if (kind === OUT_LOG) {
        this.onLog(output)
      } else if (kind === OUT_PART || kind === OUT_ERROR) {
        const payload = Buffer.allocUnsafe(header[H_LENGTH]!)
        output.copyPayload(payload, 0)
        output.consume()
        this.parts.push(payload)
        if (kind === OUT_ERROR) {
          const record = JSON.parse(Buffer.concat(this.parts).toString('utf8')) as ErrorRecord
          this.parts = []
          this.fail(revive(record))
        }
      } else {
        this.fail(errors.workerDied(this.site(), new Error(`internal: unknown output frame kind ${kind}`)))
      }
    }
  }

  /** A log frame (see OUT_LOG) becomes an entry for the `log` hook. */
  private onLog(output: FrameRing): void {
    const header = output.header
    const site = {
      module: this.guest.name,
      exportName: EXPORT_NAMES[header[H_SEQ]!] ?? 'process_chunk',
      offset: output.offsetOfFrame(),
    }
    const level = header[H_ARG]!
    let bytes: Uint8Array | undefined
    if (level >= 0 && this.hooks.guestLog) {
      bytes = new Uint8Array(header[H_LENGTH]!)
      output.copyPayload(bytes, 0)
    }
    const count = header[H_TOTAL]!
    output.consume()
    if (!this.hooks.guestLog) return
    this.hooks.guestLog(bytes ? logEntry(level, bytes, count, site) : droppedEntry(count, site))
  }

  private checkTime(): void {
    this.holdProcess()
    const ctl = this.ctl
    if (!ctl || Atomics.load(ctl, CTL_STATE) !== STATE_RUNNING) return
    if (now() - this.clock![CTL_STARTED_F64]! <= this.options.timeout) return
    const site = this.site()
    log('%s() overran %d ms at offset %d: terminating the worker', site.exportName, this.options.timeout, site.offset)
    this.fail(errors.timeout(site, this.options.timeout))
  }

  private onDeath(cause: unknown): void {
    this.fail(errors.workerDied(this.site(), cause))
  }

  /** The instance is gone: kill the worker and report to whoever is waiting. */
  private fail(err: WasmSandboxError): void {
    this.kill()
    if (this.destroyed) return
    log('failed: %s', err.message)
    const snapshotCallback = this.snapshotCallback
    this.snapshotCallback = undefined
    const job = this.sent[0]
    this.sent.length = 0
    const closed = this.closeCallback
    this.closeCallback = undefined
    // A session being closed ran no chunk: its failure is nobody's output, and its worker is gone.
    if (closed) closed(err)
    else if (this.startCallback) this.finishStart(err)
    else if (snapshotCallback) snapshotCallback(err)
    else this.hooks.failed(job, err)
  }

  /** Ends the session, terminating its worker: after a failure or a stop nothing may reuse it. */
  private kill(): void {
    const worker = this.detach()
    if (worker) {
      this.input?.wakeAll()
      this.pool.discard(worker)
    }
    this.input = undefined
  }

  /** Ends a session that finished cleanly: the worker goes back to the pool. */
  private release(): void {
    const worker = this.detach()
    this.input = undefined
    if (worker) this.pool.release(worker)
  }

  private detach(): Worker | undefined {
    const worker = this.worker
    this.cancelWait?.()
    this.cancelWait = undefined
    this.pastGuestMs += this.clock?.[CTL_GUEST_MS_F64] ?? 0
    this.clock = undefined
    if (this.watchdog) clearInterval(this.watchdog)
    this.watchdog = undefined
    if (this.idle) clearImmediate(this.idle)
    this.idle = undefined
    if (this.outputDue) clearTimeout(this.outputDue)
    this.outputDue = undefined
    this.worker = undefined
    this.output = undefined
    this.pending = undefined
    this.outstanding = 0
    // The pool refs and unrefs the workers it holds.
    this.holding = false
    if (worker) {
      worker.off('message', this.onWorkerMessage)
      worker.off('error', this.onWorkerError)
      worker.off('exit', this.onWorkerExit)
    }
    return worker
  }
}

function noop(): void {}
