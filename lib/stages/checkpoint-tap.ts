import type { TransformCallback } from 'node:stream'
import { Transform } from 'readable-stream'

export interface CheckpointTapOptions {
  /** Milliseconds between checkpoints. Typed now; saving checkpoints comes in a later release. */
  interval?: number
  /** Bytes buffered on each side. Default 64 KiB. */
  highWaterMark?: number
}

/**
 * Sits after the executor and counts the output position a checkpoint will record. In this
 * release it saves nothing (checkpoints are not implemented), so the composed stream leaves it
 * out; it is exported for people who compose their own chain and want the count.
 */
export class CheckpointTap extends Transform {
  /** Output bytes that have passed the tap. */
  bytesOut = 0
  readonly interval: number

  constructor(options: CheckpointTapOptions = {}) {
    const hwm = options.highWaterMark ?? 64 * 1024
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm })
    this.interval = options.interval ?? 5000
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytesOut += chunk.length
    callback(null, chunk)
  }
}
