import type { TransformCallback } from 'node:stream'
import { Transform } from 'readable-stream'
import { errors } from '../errors.js'
import { logger } from '../log.js'
import { resolveGateSettings, type BackpressureStrategy, type FlowControlOptions, type GateSettings } from '../options.js'
import { emitSafely } from './emit-safely.js'
import { offsetOf } from './offset.js'

const log = logger('gate')

export interface GateFlowControl extends FlowControlOptions {
  /** With `'adaptive'`: the delay, in ms, a chunk waits when downstream is at its high watermark. Default 50. */
  maxDelay?: number
}

export interface BackpressureGateOptions {
  /** Default `'block'`: native backpressure, the source waits. */
  strategy?: BackpressureStrategy
  /** Watermarks (bytes buffered downstream) for the lossy strategies. Default: `highWaterMark` and half of it. */
  flowControl?: GateFlowControl
  /** Bytes buffered on each side with `'block'`, and on the writable side with `'adaptive'`. Default 64 KiB. */
  highWaterMark?: number
}

/** What the gate has seen, passed and shed, in chunks and bytes. */
export interface GateStats {
  chunksIn: number
  bytesIn: number
  chunksOut: number
  bytesOut: number
  chunksDropped: number
  bytesDropped: number
  /** Chunks held back by `'adaptive'` before being passed. */
  delays: number
}

/** Emitted as `'drop'` for every chunk shed. `offset` is the chunk's input offset. */
export interface GateDrop {
  offset: number
  length: number
}

/**
 * The gate enforces its own bound for the lossy strategies, so Transform must never hold the
 * write callback on its behalf (it does once its readable buffer passes readableHighWaterMark).
 */
const UNBOUNDED = Number.MAX_SAFE_INTEGER

function resolve(options: BackpressureGateOptions): GateSettings {
  if (typeof options !== 'object' || options === null) throw errors.invalidOption('BackpressureGate options must be an object')
  return resolveGateSettings(options.strategy, options.flowControl, options.highWaterMark)
}

/**
 * Flow control between the chunker and the executor. Pressure is the bytes waiting in the
 * gate's own readable side, which fill up when the next stage stops reading.
 *
 * - `'block'`: a plain pass-through; Node's backpressure pauses the source.
 * - `'drop'`: never pauses the source; sheds whole chunks from when `highWaterMark` bytes are
 *   buffered until the buffer is back down to `lowWaterMark`. Buffered ≤ highWaterMark + 1 chunk.
 * - `'sample'`: under the same pressure, passes one chunk in `sampleRate`; never lets the buffer
 *   pass 2 × highWaterMark.
 * - `'adaptive'`: below `lowWaterMark` passes at once; up to `highWaterMark` holds each chunk (and
 *   so the source) for up to `maxDelay` ms, more the fuller the buffer; above it, drops.
 *
 * Chunks from the chunker are whole records when a delimiter is set, so only whole records are shed.
 */
export class BackpressureGate extends Transform {
  readonly strategy: BackpressureStrategy
  readonly stats: GateStats = { chunksIn: 0, bytesIn: 0, chunksOut: 0, bytesOut: 0, chunksDropped: 0, bytesDropped: 0, delays: 0 }
  private readonly high: number
  private readonly low: number
  private readonly sampleRate: number
  private readonly maxDelay: number
  /** Under pressure (drop, sample) or at the high watermark (adaptive): the current drop burst. */
  private shedding = false
  private burstChunks = 0
  private burstBytes = 0
  private sampleCount = 0
  /** The one timer `'adaptive'` reuses (refreshed when the delay is unchanged), and its chunk. */
  private timer: NodeJS.Timeout | null = null
  private timerMs = 0
  private heldChunk: Buffer | null = null
  private heldCallback: TransformCallback | null = null
  private readonly release = (): void => {
    const chunk = this.heldChunk!
    const callback = this.heldCallback!
    this.heldChunk = null
    this.heldCallback = null
    this.pass(chunk, callback)
  }

  constructor(options: BackpressureGateOptions = {}) {
    const r = resolve(options)
    const lossy = r.strategy !== 'block'
    super({
      readableHighWaterMark: lossy ? UNBOUNDED : r.streamHwm,
      // 'drop' and 'sample' call back at once, so nothing queues here; with a bound, a chunk larger
      // than it would still make write() return false and pause a piped source for a tick.
      writableHighWaterMark: r.strategy === 'block' || r.strategy === 'adaptive' ? r.streamHwm : UNBOUNDED,
    })
    this.strategy = r.strategy
    this.high = r.high
    this.low = r.low
    this.sampleRate = r.sampleRate
    this.maxDelay = r.maxDelay
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const stats = this.stats
    stats.chunksIn++
    stats.bytesIn += chunk.length
    switch (this.strategy) {
      case 'block':
        this.pass(chunk, callback)
        return
      case 'drop':
        if (this.underPressure()) this.shed(chunk, callback)
        else this.pass(chunk, callback)
        return
      case 'sample':
        if (!this.underPressure()) this.pass(chunk, callback)
        else if (++this.sampleCount < this.sampleRate || this.readableLength + chunk.length > 2 * this.high) {
          if (this.sampleCount >= this.sampleRate) this.sampleCount = 0
          this.shed(chunk, callback)
        } else {
          this.sampleCount = 0
          this.pass(chunk, callback)
        }
        return
      case 'adaptive':
        this.admit(chunk, callback)
        return
    }
  }

  override _flush(callback: TransformCallback): void {
    this.endBurst()
    callback()
  }

  override _destroy(err: Error | null, callback: (error: Error | null) => void): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    // The held write is abandoned, as a destroyed stream's in-flight write is: never called back.
    this.heldChunk = null
    this.heldCallback = null
    callback(err)
  }

  /** Hysteresis: pressure starts at the high watermark and lasts until the low one. */
  private underPressure(): boolean {
    const buffered = this.readableLength
    if (this.shedding) {
      if (buffered > this.low) return true
      this.endBurst()
      return false
    }
    if (buffered < this.high) return false
    this.shedding = true
    this.sampleCount = 0
    log('%s: %d bytes buffered downstream, shedding from input offset %d', this.strategy, buffered, this.stats.bytesIn)
    return true
  }

  private admit(chunk: Buffer, callback: TransformCallback): void {
    const buffered = this.readableLength
    if (buffered >= this.high) {
      if (!this.shedding) {
        this.shedding = true
        log('adaptive: %d bytes buffered downstream, shedding from input offset %d', buffered, this.stats.bytesIn)
      }
      this.shed(chunk, callback)
      return
    }
    this.endBurst()
    const ms = buffered < this.low ? 0 : Math.round((this.maxDelay * (buffered - this.low)) / (this.high - this.low))
    if (ms < 1) {
      this.pass(chunk, callback)
      return
    }
    this.stats.delays++
    this.heldChunk = chunk
    this.heldCallback = callback
    if (this.timer !== null && this.timerMs === ms) this.timer.refresh()
    else {
      this.timerMs = ms
      this.timer = setTimeout(this.release, ms)
    }
  }

  private pass(chunk: Buffer, callback: TransformCallback): void {
    this.stats.chunksOut++
    this.stats.bytesOut += chunk.length
    callback(null, chunk)
  }

  private shed(chunk: Buffer, callback: TransformCallback): void {
    const length = chunk.length
    const stats = this.stats
    stats.chunksDropped++
    stats.bytesDropped += length
    this.burstChunks++
    this.burstBytes += length
    if (this.listenerCount('drop') > 0) {
      // Untagged input: the offset is the running count of bytes in, before this chunk.
      const drop: GateDrop = { offset: offsetOf(chunk) ?? stats.bytesIn - length, length }
      emitSafely(this, 'drop', drop)
      // A listener that threw has destroyed the gate; its write is abandoned like any in-flight one.
      if (this.destroyed) return
    }
    callback()
  }

  private endBurst(): void {
    if (!this.shedding) return
    this.shedding = false
    log('%s: pressure off, shed %d chunks (%d bytes)', this.strategy, this.burstChunks, this.burstBytes)
    this.burstChunks = 0
    this.burstBytes = 0
  }
}
