/**
 * The threads that load big guests, so that reading, hashing, parsing, rewriting and compiling a
 * module of tens of megabytes never blocks the host's event loop (it did for seconds). A load
 * runs in a thread of its own with a bounded JS heap and a time limit; a thread that fails either
 * is ended, and the next load gets a fresh one. A thread that loaded cleanly is kept a moment
 * for the next load, and never keeps the process alive while it waits.
 */
import { Worker } from 'node:worker_threads'
import { errors, type WasmSandboxError } from '../errors.js'
import type { LoadedGuest } from '../guest/load.js'
import { logger } from '../log.js'
import { revive, type ErrorRecord } from './protocol.js'
import { workerExecArgv } from './worker-pool.js'

const log = logger('loader')
const ENTRY = new URL('./loader-entry.js', import.meta.url)

/** How loading is split between the calling thread and loader threads. An object, so tests can lower it. */
export const LOADER_LIMITS = {
  /**
   * Modules of at most this many bytes load on the calling thread: a loader thread costs more
   * than their whole load (a KB guest loads in about 1 ms), and a 1 MiB one blocks the event
   * loop for a few milliseconds at most (bench/load.ts).
   */
  inlineBytes: 256 * 1024,
  /**
   * JS heap of a loader thread. Parsing a real module needs little (100,000 functions: a few
   * MB); a hostile one declaring millions of types or exports runs out here, not in the host.
   * Bytes and compiled code are outside it: those are bounded by limits.moduleSize.
   */
  heapMb: 256,
  /** Loads that run at once; more wait their turn (each may hold hundreds of MB while it compiles). */
  maxThreads: 2,
  /** How long a thread that loaded cleanly is kept for the next load. */
  idleMs: 2000,
  /**
   * A thread that loaded a module bigger than this is ended at once rather than kept: its heap
   * still holds the bytes and their rewritten copies (about twice the module) until it collects
   * garbage, and a fresh thread costs little next to such a load.
   */
  keepBelowBytes: 16 * 1024 * 1024,
}

/** What a loader thread is given: a file it reads itself, or bytes already copied to shared memory. */
export type LoaderInput = { path: string } | { shared: SharedArrayBuffer }

export interface LoadRequest {
  input: LoaderInput
  /** Bytes of the module, as measured before the load. */
  size: number
  name: string
  memoryLimit: number | undefined
  maxModuleSize: number
  timeoutMs: number
}

/** Main thread → loader thread. */
export type ToLoader = { type: 'load'; request: Omit<LoadRequest, 'timeoutMs'> } | { type: 'compile' } | { type: 'skip' }
/** Loader thread → main thread. */
export type FromLoader = { type: 'hashed'; hash: string } | { type: 'loaded'; guest: LoadedGuest } | { type: 'failed'; error: ErrorRecord }

/** One load in a loader thread, in two steps, so a guest found in the cache by its hash is not compiled again. */
export interface LoaderJob {
  /** The sha256 of the module's bytes, once the thread has them. */
  readonly hashed: Promise<string>
  /** Goes on with the load: parse, check, rewrite, compile. */
  compile(): Promise<LoadedGuest>
  /** Stops after the hash: the thread is free for the next load. */
  skip(): void
}

class Job implements LoaderJob {
  readonly hashed: Promise<string>
  private resolveHash!: (hash: string) => void
  private rejectHash!: (err: WasmSandboxError) => void
  private result: { resolve: (guest: LoadedGuest) => void; reject: (err: WasmSandboxError) => void } | undefined
  private failure: WasmSandboxError | undefined
  private settled = false
  thread: LoaderThread | undefined
  timer: NodeJS.Timeout | undefined

  constructor(readonly request: LoadRequest) {
    this.hashed = new Promise((resolve, reject) => {
      this.resolveHash = resolve
      this.rejectHash = reject
    })
  }

  compile(): Promise<LoadedGuest> {
    if (this.failure) return Promise.reject(this.failure)
    if (this.settled) return Promise.reject(new Error('this load was skipped'))
    return new Promise((resolve, reject) => {
      this.result = { resolve, reject }
      this.thread!.post({ type: 'compile' })
    })
  }

  skip(): void {
    if (this.settled) return
    this.thread!.post({ type: 'skip' })
    this.finish()
  }

  onHashed(hash: string): void {
    this.resolveHash(hash)
  }

  onLoaded(guest: LoadedGuest): void {
    const result = this.result
    this.finish()
    result?.resolve(guest)
  }

  fail(err: WasmSandboxError): void {
    if (this.settled) return
    this.failure = err
    const result = this.result
    this.finish()
    this.rejectHash(err)
    result?.reject(err)
  }

  private finish(): void {
    this.settled = true
    clearTimeout(this.timer)
    const thread = this.thread
    this.thread = undefined
    if (thread?.job === this) thread.done(this.request.size)
  }
}

/** A loader thread and the load it runs, if any. */
class LoaderThread {
  readonly worker: Worker
  job: Job | undefined
  private idleTimer: NodeJS.Timeout | undefined
  private ended = false

  constructor(private readonly pool: LoaderThreads) {
    this.worker = new Worker(ENTRY, {
      execArgv: workerExecArgv(),
      resourceLimits: { maxOldGenerationSizeMb: LOADER_LIMITS.heapMb, maxYoungGenerationSizeMb: 32, stackSizeMb: 4 },
    })
    this.worker.on('message', (message: FromLoader) => this.onMessage(message))
    this.worker.on('error', (err: Error & { code?: string }) => {
      const job = this.job
      if (!job) return
      const name = job.request.name
      this.end()
      job.fail(err.code === 'ERR_WORKER_OUT_OF_MEMORY' ? errors.loaderOutOfMemory(name, LOADER_LIMITS.heapMb) : errors.loaderDied(name, err))
    })
    this.worker.on('exit', (code) => {
      const job = this.job
      this.end()
      job?.fail(errors.loaderDied(job.request.name, new Error(`it exited with code ${code}`)))
    })
  }

  run(job: Job): void {
    clearTimeout(this.idleTimer)
    this.job = job
    job.thread = this
    // Busy, it keeps the process alive as any pending I/O does; idle, it does not.
    this.worker.ref()
    // limits.loadTimeout: Infinity is no limit (a finite one is at most Node's longest timer).
    if (Number.isFinite(job.request.timeoutMs)) {
      job.timer = setTimeout(() => {
        this.end()
        job.fail(errors.loadTimeout(job.request.name, job.request.timeoutMs))
      }, job.request.timeoutMs)
    }
    const { timeoutMs: _, ...request } = job.request
    this.post({ type: 'load', request })
  }

  post(message: ToLoader): void {
    this.worker.postMessage(message)
  }

  /** The job is over and the thread healthy: ready for the next, unless it holds much garbage. */
  done(size: number): void {
    this.job = undefined
    if (this.ended) return
    if (size > LOADER_LIMITS.keepBelowBytes) {
      this.end()
      return
    }
    this.worker.unref()
    this.idleTimer = setTimeout(() => this.end(), LOADER_LIMITS.idleMs).unref()
    this.pool.idle(this)
  }

  /** Ends the thread; its job, if any, is failed by the caller. */
  end(): void {
    if (this.ended) return
    this.ended = true
    this.job = undefined
    clearTimeout(this.idleTimer)
    this.pool.gone(this)
    // Its load has failed already: a thread finishing a native call before it stops must not hold the process.
    this.worker.unref()
    void this.worker.terminate()
  }

  private onMessage(message: FromLoader): void {
    const job = this.job
    if (!job) return
    if (message.type === 'hashed') job.onHashed(message.hash)
    else if (message.type === 'loaded') job.onLoaded(message.guest)
    else job.fail(revive(message.error))
  }
}

/** Up to `LOADER_LIMITS.maxThreads` loader threads; loads beyond that wait, first come first served. */
export class LoaderThreads {
  private readonly threads = new Set<LoaderThread>()
  private readonly free: LoaderThread[] = []
  private readonly waiting: Job[] = []

  /** Threads alive now, busy or idle. */
  get size(): number {
    return this.threads.size
  }

  start(request: LoadRequest): LoaderJob {
    const job = new Job(request)
    this.waiting.push(job)
    this.dispatch()
    return job
  }

  idle(thread: LoaderThread): void {
    this.free.push(thread)
    this.dispatch()
  }

  gone(thread: LoaderThread): void {
    this.threads.delete(thread)
    const at = this.free.indexOf(thread)
    if (at >= 0) this.free.splice(at, 1)
    // A thread that failed leaves room for a fresh one.
    queueMicrotask(() => this.dispatch())
  }

  private dispatch(): void {
    while (this.waiting.length > 0) {
      let thread = this.free.pop()
      if (!thread) {
        if (this.threads.size >= LOADER_LIMITS.maxThreads) return
        thread = new LoaderThread(this)
        this.threads.add(thread)
        log('loader thread started (%d alive)', this.threads.size)
      }
      thread.run(this.waiting.shift()!)
    }
  }
}

/** The loader threads of this process. */
export const loaderThreads = new LoaderThreads()
