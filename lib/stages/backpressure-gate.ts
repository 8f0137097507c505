import type { TransformCallback } from 'node:stream'
import { Transform } from 'readable-stream'
import { errors } from '../errors.js'
import type { BackpressureStrategy, FlowControlOptions } from '../options.js'

export interface BackpressureGateOptions {
  /** Default `'block'`: native backpressure, the source waits. The lossy ones come in a later release. */
  strategy?: BackpressureStrategy
  flowControl?: FlowControlOptions
  /** Bytes buffered on each side. Default 64 KiB. */
  highWaterMark?: number
}

/**
 * Flow control between the chunker and the executor. With `'block'` there is nothing to do
 * beyond what Node streams already do, so it passes chunks straight through (and the composed
 * stream leaves it out). `'drop'`, `'sample'` and `'adaptive'` are typed but not implemented
 * yet: asking for them is an error rather than a silent `'block'`.
 */
export class BackpressureGate extends Transform {
  readonly strategy: BackpressureStrategy

  constructor(options: BackpressureGateOptions = {}) {
    const hwm = options.highWaterMark ?? 64 * 1024
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm })
    this.strategy = options.strategy ?? 'block'
    if (this.strategy !== 'block') {
      throw errors.invalidOption(`backpressure '${this.strategy}' is not implemented in this release; only 'block' is.`)
    }
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    callback(null, chunk)
  }
}
