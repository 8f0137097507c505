/**
 * The input byte offset a chunk starts at, carried on the chunk itself. It travels in-band
 * because a stage between the chunker and the executor may drop chunks, so the executor
 * cannot recompute offsets by counting what it receives.
 */
export const kOffset = Symbol('wasm-sandbox.offset')

export type OffsetChunk = Buffer & { [kOffset]?: number }

/**
 * Tags `chunk` itself, so it must be an object the tagger made (a `subarray` view), never one a
 * caller wrote: a caller may write the same object again, and the later tag would overwrite
 * this one before the chunk is read.
 */
export function tagOffset(chunk: Buffer, offset: number): Buffer {
  ;(chunk as OffsetChunk)[kOffset] = offset
  return chunk
}

export function offsetOf(chunk: Uint8Array): number | undefined {
  return (chunk as OffsetChunk)[kOffset]
}
