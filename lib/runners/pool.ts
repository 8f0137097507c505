import type { GuestState } from '../checkpoint/types.js'
import { errors, type WasmSandboxError } from '../errors.js'
import type { LoadedGuest } from '../guest/load.js'
import { noState, type GuestRunner, type Job, type RunnerCallback, type RunnerFactory, type RunnerHooks, type RunnerOptions } from './runner.js'


interface Instance {
  readonly runner: GuestRunner
  /** Jobs handed to it and not yet done. */
  queued: number
  /** It was asked to hold its output (returned false) and waits for `resume()`. */
  paused: boolean
}

interface Entry {
  readonly job: Job
  instance: Instance | undefined
  /** Output that arrived before every earlier job was delivered. */
  held: Buffer[]
  done: boolean
  skipped: WasmSandboxError | undefined
}

/**
 * Runs a stateless guest on up to `size` instances at once, each in its own worker, and
 * delivers output in input order: a runner that drives runners. Each job goes to the instance
 * with the fewest queued; the oldest job's output passes straight through and a later job's is
 * held until every job before it is delivered, at most `holdLimit` bytes before the instance
 * that produces it is paused (the instance running the oldest job never is). The end of input
 * flushes each instance in turn. Instances past the first take a worker only if one is free at
 * once, so pooled streams never wait on each other for their extra instances.
 */
export class PoolRunner implements GuestRunner {
  private readonly factory: RunnerFactory
  private readonly guest: LoadedGuest
  private readonly hooks: RunnerHooks
  private readonly options: RunnerOptions
  private readonly size: number
  private readonly stateless: boolean
  private readonly holdLimit: number
  private instances: Instance[] = []
  /** Extra instances still starting. */
  private readonly starting = new Set<GuestRunner>()
  /** Jobs not yet delivered, in input order. */
  private readonly order: Entry[] = []
  private readonly entries = new Map<Job, Entry>()
  private heldBytes = 0
  /** Downstream is full: deliver nothing until `resume()`. */
  private blocked = false
  /** The caller's callback for a job, held while every instance is full. */
  private accepting: RunnerCallback | undefined
  private flushing = 0
  private pastGuestMs = 0
  private failed = false
  private destroyed = false

  constructor(factory: RunnerFactory, guest: LoadedGuest, hooks: RunnerHooks, options: RunnerOptions, size: number, stateless: boolean) {
    this.factory = factory
    this.guest = guest
    this.hooks = hooks
    this.options = options
    this.size = size
    this.stateless = stateless
    this.holdLimit = Math.max(options.highWaterMark ?? options.bufferSize, 1)
  }

  /** A stateless guest starts fresh: a restored state has nothing to give it. */
  start(callback: RunnerCallback): void {
    if (!this.stateless) {
      callback(statefulPoolError(this.guest, this.size))
      return
    }
    this.failed = false
    const first = this.spawn(this.options)
    first.start((err) => {
      if (err) {
        first.destroy()
        callback(err)
        return
      }
      this.instances.push(this.instanceOf(first))
      callback(null)
    })
    for (let i = 1; i < this.size; i++) this.startSpare()
  }

  process(job: Job, callback: RunnerCallback): void {
    const entry: Entry = { job, instance: undefined, held: [], done: false, skipped: undefined }
    this.order.push(entry)
    this.entries.set(job, entry)
    if (!job.input) {
      callback(null)
      this.advance()
      return
    }
    let instance = this.instances[0]!
    for (const candidate of this.instances) if (candidate.queued < instance.queued) instance = candidate
    entry.instance = instance
    instance.queued++
    instance.runner.process(job, () => this.accept(callback))
  }

  snapshot(callback: (err: Error | null, state?: GuestState) => void): void {
    callback(null, noState())
  }

  guestTimeMs(): number {
    let total = this.pastGuestMs
    for (const instance of this.instances) total += instance.runner.guestTimeMs()
    return total
  }

  resume(): void {
    this.blocked = false
    this.advance()
  }

  restart(callback: RunnerCallback): void {
    this.stopAll()
    this.order.length = 0
    this.entries.clear()
    this.heldBytes = 0
    this.blocked = false
    this.flushing = 0
    this.start(callback)
  }

  destroy(): void {
    this.destroyed = true
    this.stopAll()
  }

  private stopAll(): void {
    for (const instance of this.instances) {
      this.pastGuestMs += instance.runner.guestTimeMs()
      instance.runner.destroy()
    }
    for (const runner of this.starting) runner.destroy()
    this.starting.clear()
    this.instances = []
    this.accepting = undefined
  }

  /** An extra instance, if a worker is free now; without one the pool runs with fewer. */
  private startSpare(): void {
    const runner = this.spawn({ ...this.options, spareWorker: true })
    this.starting.add(runner)
    runner.start((err) => {
      if (!this.starting.delete(runner)) return
      // Too late to help once the end of input is being flushed.
      if (err || this.flushing > 0 || this.destroyed || this.failed) {
        runner.destroy()
        return
      }
      this.instances.push(this.instanceOf(runner))
      this.release()
    })
  }

  private instanceOf(runner: GuestRunner): Instance {
    return { runner, queued: 0, paused: false }
  }

  private spawn(options: RunnerOptions): GuestRunner {
    let self: Instance | undefined
    const find = (): Instance | undefined => (self ??= this.instances.find((i) => i.runner === runner))
    const runner = this.factory(
      this.guest,
      {
        output: (job, chunk) => this.onOutput(find()!, job, chunk),
        done: (job) => this.onDone(find()!, job),
        failed: (job, err) => this.onFailed(job, err),
        skipped: (job, err) => this.onSkipped(find()!, job, err),
        stderr: (chunk) => this.hooks.stderr?.(chunk),
      },
      options,
    )
    return runner
  }

  /** The instance took the job: the caller may send the next once some instance has room. */
  private accept(callback: RunnerCallback): void {
    if (this.hasRoom()) callback(null)
    else this.accepting = callback
  }

  private hasRoom(): boolean {
    const limit = this.options.maxInFlight
    for (const instance of this.instances) if (instance.queued < limit) return true
    return false
  }

  /** Room opened (a job done, an instance joined): hand back a held accept. */
  private release(): void {
    const callback = this.accepting
    if (callback && this.hasRoom()) {
      this.accepting = undefined
      callback(null)
    }
  }

  private onOutput(instance: Instance, job: Job, chunk: Buffer): boolean {
    const entry = this.entries.get(job)!
    if (entry === this.order[0] && entry.held.length === 0 && !this.blocked) {
      if (this.hooks.output(job, chunk)) return true
      this.blocked = true
      instance.paused = true
      return false
    }
    entry.held.push(chunk)
    this.heldBytes += chunk.length
    if (this.blocked || (this.heldBytes > this.holdLimit && entry !== this.order[0])) {
      instance.paused = true
      return false
    }
    return true
  }

  private onDone(instance: Instance, job: Job): void {
    const entry = this.entries.get(job)!
    if (!job.input) {
      this.flushNext()
      return
    }
    instance.queued--
    entry.done = true
    this.release()
    this.advance()
  }

  private onSkipped(instance: Instance, job: Job, err: WasmSandboxError): void {
    const entry = this.entries.get(job)!
    if (job.input) instance.queued--
    entry.done = true
    entry.skipped = err
    for (const chunk of entry.held) this.heldBytes -= chunk.length
    entry.held = []
    if (!job.input) {
      this.flushNext()
      return
    }
    this.release()
    this.advance()
  }

  private onFailed(job: Job | undefined, err: WasmSandboxError): void {
    if (this.failed || this.destroyed) return
    this.failed = true
    this.stopAll()
    this.hooks.failed(job, err)
  }

  /** Delivers, in input order, every job whose turn has come, as far as downstream takes it. */
  private advance(): void {
    const order = this.order
    while (order.length > 0 && !this.blocked) {
      const head = order[0]!
      while (head.held.length > 0) {
        const chunk = head.held.shift()!
        this.heldBytes -= chunk.length
        if (!this.hooks.output(head.job, chunk)) {
          this.blocked = true
          return
        }
      }
      if (!head.job.input) {
        if (this.flushing === 0) this.startFlush()
        break
      }
      if (!head.done) break
      order.shift()
      this.entries.delete(head.job)
      if (head.skipped) this.hooks.skipped?.(head.job, head.skipped)
      else this.hooks.done(head.job)
    }
    if (!this.blocked) this.unpause()
  }

  /** Paused instances go on once there is room again; the oldest job's never waits for room. */
  private unpause(): void {
    const head = this.order[0]?.instance
    const room = this.heldBytes <= this.holdLimit
    for (const instance of this.instances) {
      if (instance.paused && (room || instance === head)) {
        instance.paused = false
        instance.runner.resume()
      }
    }
  }

  /** Every chunk is delivered: each instance flushes, one after another, in the pool's order. */
  private startFlush(): void {
    for (const runner of this.starting) runner.destroy()
    this.starting.clear()
    this.flushNext()
  }

  private flushNext(): void {
    const head = this.order[0]!
    if (this.flushing === this.instances.length) {
      this.order.shift()
      this.entries.delete(head.job)
      this.hooks.done(head.job)
      return
    }
    const instance = this.instances[this.flushing++]!
    instance.runner.process(head.job, noop)
  }
}

/** The pool refuses a guest that keeps state: its chunks must run in order on one instance. */
export function statefulPoolError(guest: LoadedGuest, size: number): WasmSandboxError {
  return errors.invalidOption(
    `maxConcurrency ${size} runs chunks of one stream on several instances at once, but ${guest.name} is not stateless: each chunk's output could depend on the chunks before it, which another instance never saw. Use maxConcurrency 1, or, if the guest keeps nothing between chunks, say so with stateless: true (or a "wasm-sandbox.stateless" custom section in the module)`,
  )
}

function noop(): void {}
