import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { logger } from '../log.js'

const log = logger('workers')
const ENTRY = new URL('./worker-entry.js', import.meta.url)

/** JS heap of a worker (the guest's linear memory is capped separately, by limits.memory). */
const RESOURCE_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 }

/**
 * The Node options a worker starts with: the host's, inherited as Node does (`undefined`),
 * unless they hold `--input-type`: a worker inherits that too, and its file entry then fails to
 * load (`node --input-type=module -e '...'` could not run a guest in a worker:
 * ERR_INPUT_TYPE_NOT_ALLOWED). Only then are they passed explicitly, without it. (An explicit
 * list is validated, and V8 flags such as `--expose-gc` are refused there though inherited
 * silently; `spawn` then starts the worker with none.)
 */
export function workerExecArgv(): string[] | undefined {
  const host = process.execArgv
  if (!host.some((arg) => arg === '--input-type' || arg.startsWith('--input-type='))) return undefined
  const argv: string[] = []
  for (let i = 0; i < host.length; i++) {
    const arg = host[i]!
    if (arg === '--input-type') i++
    else if (!arg.startsWith('--input-type=')) argv.push(arg)
  }
  return argv
}

/**
 * Workers per core a sandbox may run at once by default. Most of a stream's life is spent
 * waiting for input or for its consumer, so a few per core keep the cores busy; each costs
 * about 9 MB of RSS and 10–25 ms to start (README, "Workers").
 */
export const WORKERS_PER_CORE = 4

/** Threads booting at once per core, for requests that wait (see `acquire`). */
export const BOOTING_PER_CORE = 1

/** How long an idle worker waits for another stream before it is ended. */
export const IDLE_MS = 2000

export interface WorkerPoolOptions {
  /** Workers alive at once (busy or idle); a stream wanting one beyond that waits. */
  maxWorkers?: number
  /** Milliseconds an idle worker is kept for reuse. */
  idleMs?: number
}

export type WorkerCallback = (err: Error | null, worker?: Worker) => void

/** The default bound of a sandbox: a few workers per core of this machine. */
export function defaultMaxWorkers(): number {
  return availableParallelism() * WORKERS_PER_CORE
}

/**
 * Threads for guest sessions, reused: a stream that ends cleanly hands its worker back, and the
 * next stream's guest starts in it with an instantiation instead of a new thread (the compiled
 * module, and V8's optimised code for it, carry over). A worker whose guest failed, timed out or
 * was stopped mid-run is never handed back: it is terminated (`discard`). At most `maxWorkers`
 * live at once; past that `acquire` waits, first come first served, and the waiting stream's
 * source is held back by ordinary backpressure. Idle workers do not keep the process alive and
 * end after `idleMs`.
 */
export class WorkerPool {
  readonly maxWorkers: number
  private readonly idleMs: number
  /** Idle workers, most recently used last (the warmest is reused first). */
  private readonly idle: Worker[] = []
  private readonly idleSince = new Map<Worker, number>()
  private readonly waiting: WorkerCallback[] = []
  private live = 0
  /** Threads started for waiting requests (or by `prestart`) and not yet online; counted in `live`. */
  private readonly booting = new Set<Worker>()
  private readonly bootLimit: number
  private sweeper: NodeJS.Timeout | undefined
  /** `close()` calls so far: a thread booting across one is not kept idle. */
  private closes = 0
  /** `closes` when each busy worker was handed out: one handed back across a close ends. */
  private readonly handedOut = new WeakMap<Worker, number>()

  constructor(options: WorkerPoolOptions = {}) {
    this.maxWorkers = options.maxWorkers ?? Infinity
    this.idleMs = options.idleMs ?? IDLE_MS
    this.bootLimit = availableParallelism() * BOOTING_PER_CORE
  }

  /** Workers alive now, busy or idle. */
  get size(): number {
    return this.live
  }

  /** Idle workers kept for reuse. */
  get idleCount(): number {
    return this.idle.length
  }

  /** Threads booting for streams that wait (or by `prestart`). */
  get bootingCount(): number {
    return this.booting.size
  }

  /** Streams waiting for a worker. */
  get waitingCount(): number {
    return this.waiting.length
  }

  /**
   * Calls back with a worker now, or once one is free; with `wait` false, with neither when none
   * is free now (it may then be one still booting). Returns a function that withdraws the request.
   *
   * A waiting request takes whichever comes first: a worker another stream hands back, or a new
   * thread once it is online. At most BOOTING_PER_CORE threads per core boot at once, one for each
   * waiting request: a burst of short streams is served by the warm workers, as they free up,
   * instead of booting a thread per stream (50 streams of 1 KiB at once on the shared pool, one
   * warm worker to begin with, took 1.6 s with 49 threads booting on 2 cores; now 0.2 s). Every
   * waiting request still has a thread on its way while the bound allows, so a stream never waits
   * on another stream to end: a pipeline of several wasm streams cannot deadlock on workers.
   */
  acquire(callback: WorkerCallback, wait = true): () => void {
    const worker = this.idle.pop()
    if (worker) {
      this.idleSince.delete(worker)
      this.handOut(worker, callback)
      return noop
    }
    if (!wait) {
      // Never ahead of a waiting request: the slot it would take is one that request waits for
      // (a chain of a sandbox's streams, one of them pooled, hung with its last stream waiting).
      if (this.live + Math.max(0, this.waiting.length - this.booting.size) < this.maxWorkers) this.spawn(callback)
      else callback(null)
      return noop
    }
    this.waiting.push(callback)
    this.bootForWaiting()
    return () => {
      const at = this.waiting.indexOf(callback)
      if (at >= 0) this.waiting.splice(at, 1)
    }
  }

  /**
   * Starts a worker now, idle, for a stream about to be made: the thread boots (about 60 ms
   * here) while the caller does other work. Unused, it ends after `idleMs` like any idle one.
   */
  prestart(): void {
    if (this.idle.length > 0 || this.booting.size > 0 || this.live >= this.maxWorkers) return
    this.boot()
  }

  /** The session in `worker` ended cleanly: the worker may run another. */
  release(worker: Worker): void {
    worker.unref()
    const next = this.waiting.shift()
    if (next) {
      this.handOut(worker, next)
      return
    }
    const since = this.handedOut.get(worker)
    if (since !== undefined && since !== this.closes) {
      // close() ended the idle workers and promised the busy ones would end with their streams.
      this.discard(worker)
      return
    }
    this.idle.push(worker)
    this.idleSince.set(worker, Date.now())
    this.sweepLater()
  }

  /** The worker's guest failed or was stopped: it is terminated, never reused. */
  discard(worker: Worker): void {
    worker.terminate().catch(() => {})
  }

  /**
   * Ends every idle worker now; busy ones end with their streams, and one still booting once it
   * is online, unless a stream is waiting for it.
   */
  close(): void {
    this.closes++
    for (const worker of this.idle.splice(0)) this.discard(worker)
    this.idleSince.clear()
  }

  /** Boots threads for the waiting requests, as many as the bounds allow. */
  private bootForWaiting(): void {
    // A failed boot fails a waiting request, so each one gets a thread on its way or an error.
    while (this.booting.size < this.waiting.length && this.booting.size < this.bootLimit && this.live < this.maxWorkers) this.boot()
    // Someone waits for them: they keep the process alive until handed over (`release` unrefs).
    if (this.waiting.length > 0) for (const worker of this.booting) worker.ref()
  }

  /** A new thread, handed to the first waiting request (or kept idle) once it is online. */
  private boot(): void {
    const worker = this.newWorker()
    if (worker instanceof Error) {
      // No thread to be had (out of memory, a thread limit): the oldest request is told so.
      this.waiting.shift()?.(worker)
      return
    }
    this.booting.add(worker)
    const closes = this.closes
    worker.once('online', () => {
      if (!this.booting.delete(worker)) return
      // Closed while it booted, for a request since withdrawn: it would only sit idle.
      if (closes !== this.closes && this.waiting.length === 0) {
        this.discard(worker)
        return
      }
      this.release(worker)
      this.bootForWaiting()
    })
  }

  /** A new thread, handed over at once: its messages queue until it is online. */
  private spawn(callback: WorkerCallback): void {
    const worker = this.newWorker()
    if (worker instanceof Error) callback(worker)
    else this.handOut(worker, callback)
  }

  private handOut(worker: Worker, callback: WorkerCallback): void {
    this.handedOut.set(worker, this.closes)
    callback(null, worker)
  }

  private newWorker(): Worker | Error {
    let worker: Worker
    try {
      const execArgv = workerExecArgv()
      try {
        worker = new Worker(ENTRY, { resourceLimits: RESOURCE_LIMITS, ...(execArgv && { execArgv }) })
      } catch (err) {
        if ((err as { code?: string }).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw err
        worker = new Worker(ENTRY, { resourceLimits: RESOURCE_LIMITS, execArgv: [] })
      }
    } catch (err) {
      return err as Error
    }
    this.live++
    worker.unref()
    // A pool listener is always there, so an error between sessions is never unhandled.
    worker.on('error', (err) => log('worker %d: %s', worker.threadId, err.message))
    worker.once('exit', (code) => this.gone(worker, code))
    log('started worker %d (%d live)', worker.threadId, this.live)
    return worker
  }

  private gone(worker: Worker, code: number): void {
    this.live--
    // A thread that could not boot fails the oldest request, as `new Worker` throwing would: booting
    // another for it could fail the same way, for good.
    if (this.booting.delete(worker)) this.waiting.shift()?.(new Error(`a worker thread exited with code ${code} before it was online`))
    const at = this.idle.indexOf(worker)
    if (at >= 0) this.idle.splice(at, 1)
    this.idleSince.delete(worker)
    // Room for a waiting stream.
    this.bootForWaiting()
  }

  private sweepLater(): void {
    if (this.sweeper || !Number.isFinite(this.idleMs)) return
    this.sweeper = setTimeout(() => this.sweep(), this.idleMs)
    this.sweeper.unref()
  }

  private sweep(): void {
    this.sweeper = undefined
    const cutoff = Date.now() - this.idleMs
    for (const worker of [...this.idle]) {
      if (this.idleSince.get(worker)! <= cutoff) {
        this.idle.splice(this.idle.indexOf(worker), 1)
        this.idleSince.delete(worker)
        this.discard(worker)
      }
    }
    if (this.idle.length > 0) this.sweepLater()
  }
}

let shared: WorkerPool | undefined

/**
 * The pool of streams made outside a sandbox (`wasmTransform`, `processFile`): reuse, no bound,
 * so each such stream still gets a worker at once, as it always has.
 */
export function sharedWorkerPool(): WorkerPool {
  shared ??= new WorkerPool()
  return shared
}

function noop(): void {}
