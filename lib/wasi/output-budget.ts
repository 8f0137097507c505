import { errors, type GuestSite } from '../errors.js'
import { defaultChunkOutputLimit } from '../guest/instance.js'

/**
 * Bounds what a WASI program writes to stdout by the input it has consumed: each chunk of input
 * allows `limits.maxOutputPerChunk` bytes (by default the same multiple of the chunk as for an
 * ABI v1 guest), and one chunk's worth is allowed before any input. In stream mode what a chunk
 * allows carries over, so a program that reads everything before writing (sort) has its whole
 * allowance at the end; in record mode each chunk starts afresh, as an ABI v1 chunk does.
 * Without it a program that writes in a loop never stops: every write restarts the time limit.
 */
export class OutputBudget {
  private readonly maxOutputPerChunk: number | undefined
  private readonly site: GuestSite
  private allowance: number
  /** What the last chunk allowed, for the message. */
  private limit: number

  constructor(module: string, maxOutputPerChunk: number | undefined, chunkSize: number) {
    this.maxOutputPerChunk = maxOutputPerChunk
    this.site = { module, exportName: '_start', offset: 0 }
    this.limit = this.allowance = this.perChunk(chunkSize)
  }

  /** A chunk of `size` bytes was consumed, up to `offset`: what it allows adds to what is left. */
  grant(size: number, offset: number): void {
    this.limit = this.perChunk(size)
    this.allowance += this.limit
    this.site.offset = offset
  }

  /** A chunk of `size` bytes at `offset` starts: it may write its own allowance, no more. */
  reset(size: number, offset: number): void {
    this.limit = this.allowance = this.perChunk(size)
    this.site.offset = offset
  }

  spend(length: number): void {
    this.allowance -= length
    if (this.allowance < 0) throw errors.outputLimit({ ...this.site }, this.limit, 'maxOutputPerChunk')
  }

  private perChunk(size: number): number {
    return this.maxOutputPerChunk ?? defaultChunkOutputLimit(size)
  }
}
