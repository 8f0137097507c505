import { GuestInstance, type OutputSink } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import type { GuestRunner, RunnerCallback, RunnerOptions } from './runner.js'

/**
 * Runs the guest on the calling thread. The cheapest runner, for trusted guests: a guest that
 * loops forever blocks the event loop, since nothing can interrupt synchronous wasm here.
 * Each chunk's output is produced in one synchronous call, so it is bounded by
 * `limits.maxOutputPerChunk` rather than by the consumer's pace.
 */
export class InlineRunner implements GuestRunner {
  private instance: GuestInstance | undefined
  private readonly guest: LoadedGuest
  private readonly sink: OutputSink
  private readonly options: RunnerOptions

  constructor(guest: LoadedGuest, sink: OutputSink, options: RunnerOptions) {
    this.guest = guest
    this.sink = sink
    this.options = options
  }

  start(callback: RunnerCallback): void {
    try {
      this.instance = new GuestInstance(this.guest, this.sink, this.options.limits)
      this.instance.init()
      this.instance.reserve(this.options.bufferSize)
    } catch (err) {
      callback(err as Error)
      return
    }
    callback(null)
  }

  process(chunk: Buffer, offset: number, callback: RunnerCallback): void {
    try {
      this.instance!.process(chunk, offset)
    } catch (err) {
      callback(err as Error)
      return
    }
    callback(null)
  }

  flush(offset: number, callback: RunnerCallback): void {
    try {
      this.instance!.flush(offset)
    } catch (err) {
      callback(err as Error)
      return
    }
    callback(null)
  }

  resume(): void {}

  destroy(): void {
    this.instance = undefined
  }
}
