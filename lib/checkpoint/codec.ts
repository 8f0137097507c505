/**
 * The on-disk (and on-wire) form of a checkpoint, shared by every storage.
 *
 * Layout, all integers little-endian:
 *
 * ```
 * "WSCK"                magic, 4 bytes
 * u8                    format version (1)
 * u32                   header length H
 * H bytes               header: UTF-8 JSON of every Checkpoint field except guest.memory,
 *                       plus the uncompressed memory length
 * u32                   compressed memory length C
 * C bytes               guest memory, raw deflate
 * 32 bytes              sha256 of every byte before it
 * ```
 *
 * Why this shape: a checkpoint is written once and read after a crash, so the reader must tell
 * a torn or rotted file from a good one without trusting anything in it. The trailing checksum
 * covers the whole file, so a file cut short anywhere (the usual crash damage) or with a flipped
 * bit fails before any of its contents are used; every length is checked against the bytes that
 * are actually there, and decompression is capped at the length the header states, so a file
 * crafted to pass the checksum still cannot make the reader allocate more than that. The header is
 * JSON so that a person can read it with `strings`, and it comes first so `list()` can report a
 * checkpoint without inflating its memory.
 */
import { createHash } from 'node:crypto'
import { promisify } from 'node:util'
import { constants as bufferConstants } from 'node:buffer'
import { deflateRaw, inflateRaw } from 'node:zlib'
import type { Checkpoint, CheckpointInfo, GuestState } from './types.js'

const deflateRawAsync = promisify(deflateRaw)
const inflateRawAsync = promisify(inflateRaw)

const MAGIC = Buffer.from('WSCK', 'latin1')
/** Version of the byte layout above (independent of, though today equal to, `Checkpoint.version`). */
export const CHECKPOINT_FORMAT_VERSION = 1
/**
 * zlib level 1: guest memory is mostly zero pages or data that is already dense, where higher
 * levels buy a few percent at several times the CPU, and a checkpoint is taken on the hot path.
 */
const COMPRESSION_LEVEL = 1
const CHECKSUM_BYTES = 32
/** magic + version + header length + compressed length + checksum */
const FIXED_BYTES = MAGIC.length + 1 + 4 + 4 + CHECKSUM_BYTES
/** A wasm32 memory is at most 65536 pages of 64 KiB. */
const MAX_WASM32_MEMORY = 65536 * 65536
const I64_MIN = -(2n ** 63n)
const I64_MAX = 2n ** 63n - 1n

/** A stored checkpoint that is truncated, altered, or not a checkpoint at all. */
export class CorruptCheckpointError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'CorruptCheckpointError'
  }
}

export interface DecodeOptions {
  /**
   * Refuse a checkpoint whose memory is larger than this many bytes before inflating anything.
   * Defaults to the wasm32 maximum (4 GiB, or the largest Buffer this Node can make if smaller).
   */
  maxMemoryBytes?: number
}

/** How one global is written in the header JSON. */
type EncodedGlobal = number | { i64: string } | { f64: string }

/** The header JSON: every checkpoint field but the guest state, which is stored beside it. */
type Header = Omit<Checkpoint, 'guest'> & {
  globals: EncodedGlobal[]
  region: GuestState['region']
  memoryLength: number
}

/**
 * Serialises a checkpoint. The header and a copy of the memory are taken synchronously, before
 * the first await, so a caller that goes on mutating its state while the promise is pending
 * still gets exactly the state it passed in.
 *
 * Throws a TypeError for a checkpoint that could not be decoded again (a non-integer offset, a
 * bigint outside the i64 range, metadata that JSON cannot represent...): better to refuse at save
 * time than to write a file that a later resume would skip as corrupt.
 */
export async function encodeCheckpoint(c: Checkpoint): Promise<Buffer> {
  const problem = checkpointProblem(c)
  if (problem !== undefined) throw new TypeError(`Cannot encode checkpoint: ${problem}`)
  const header: Header = {
    version: 1,
    sequence: c.sequence,
    moduleHash: c.moduleHash,
    optionsHash: c.optionsHash,
    inputOffset: c.inputOffset,
    outputOffset: c.outputOffset,
    timestamp: c.timestamp,
    metadata: c.metadata,
    globals: c.guest.globals.map(encodeGlobal),
    region: { ptr: c.guest.region.ptr, size: c.guest.region.size },
    memoryLength: c.guest.memory.byteLength,
  }
  let json: string
  try {
    json = JSON.stringify(header)
  } catch (err) {
    throw new TypeError(`Cannot encode checkpoint: metadata is not JSON-serialisable (${(err as Error).message})`, {
      cause: err,
    })
  }
  const headerBytes = Buffer.from(json, 'utf8')
  const memory = Buffer.from(c.guest.memory) // the copy: zlib reads it on the thread pool, after we return
  const compressed = await deflateRawAsync(memory, { level: COMPRESSION_LEVEL })
  if (headerBytes.length > 0xffffffff || compressed.length > 0xffffffff) {
    throw new TypeError('Cannot encode checkpoint: header or compressed memory exceeds 4 GiB')
  }

  const out = Buffer.allocUnsafe(FIXED_BYTES + headerBytes.length + compressed.length)
  let at = MAGIC.copy(out, 0)
  at = out.writeUInt8(CHECKPOINT_FORMAT_VERSION, at)
  at = out.writeUInt32LE(headerBytes.length, at)
  at += headerBytes.copy(out, at)
  at = out.writeUInt32LE(compressed.length, at)
  at += compressed.copy(out, at)
  createHash('sha256').update(out.subarray(0, at)).digest().copy(out, at)
  return out
}

/**
 * Parses and verifies a checkpoint, memory included. Whatever is wrong with `bytes`, the only
 * error it throws is CorruptCheckpointError.
 */
export async function decodeCheckpoint(bytes: Uint8Array, options: DecodeOptions = {}): Promise<Checkpoint> {
  try {
    const { header, compressed } = parse(bytes)
    const limit = Math.min(options.maxMemoryBytes ?? Infinity, MAX_WASM32_MEMORY, bufferConstants.MAX_LENGTH)
    if (header.memoryLength > limit) {
      throw new CorruptCheckpointError(`checkpoint memory of ${header.memoryLength} bytes exceeds the limit of ${limit}`)
    }
    let memory: Buffer
    try {
      // maxOutputLength must be at least 1; an empty memory is checked by the length test below.
      memory = await inflateRawAsync(compressed, { maxOutputLength: Math.max(1, header.memoryLength) })
    } catch (err) {
      throw new CorruptCheckpointError(`checkpoint memory does not inflate: ${(err as Error)?.message ?? err}`, {
        cause: err,
      })
    }
    if (memory.length !== header.memoryLength) {
      throw new CorruptCheckpointError(
        `checkpoint memory inflates to ${memory.length} bytes, but its header says ${header.memoryLength}`,
      )
    }
    const info = headerToInfo(header)
    return {
      version: info.version,
      sequence: info.sequence,
      moduleHash: info.moduleHash,
      optionsHash: info.optionsHash,
      inputOffset: info.inputOffset,
      outputOffset: info.outputOffset,
      timestamp: info.timestamp,
      metadata: info.metadata,
      guest: {
        // A plain Uint8Array view (no copy), as the type promises, rather than a Buffer.
        memory: new Uint8Array(memory.buffer, memory.byteOffset, memory.byteLength),
        globals: header.globals.map(decodeGlobal),
        region: { ptr: header.region.ptr, size: header.region.size },
      },
    }
  } catch (err) {
    throw asCorrupt(err)
  }
}

/**
 * The checkpoint's header, verified (magic, version, lengths, checksum over the whole file, JSON
 * shape) but without inflating its memory. `storedBytes` is the length of `bytes`.
 */
export function decodeCheckpointInfo(bytes: Uint8Array): CheckpointInfo {
  try {
    const { header } = parse(bytes)
    return { ...headerToInfo(header), storedBytes: bytes.byteLength }
  } catch (err) {
    throw asCorrupt(err)
  }
}

function asCorrupt(err: unknown): CorruptCheckpointError {
  if (err instanceof CorruptCheckpointError) return err
  return new CorruptCheckpointError(`unreadable checkpoint: ${(err as Error)?.message ?? String(err)}`, { cause: err })
}

function headerToInfo(h: Header): Omit<CheckpointInfo, 'storedBytes'> {
  return {
    version: h.version,
    sequence: h.sequence,
    moduleHash: h.moduleHash,
    optionsHash: h.optionsHash,
    inputOffset: h.inputOffset,
    outputOffset: h.outputOffset,
    timestamp: h.timestamp,
    metadata: h.metadata,
  }
}

/** Checks the framing and the checksum, then the header; returns views into `bytes`. */
function parse(bytes: Uint8Array): { header: Header; compressed: Buffer } {
  if (!(bytes instanceof Uint8Array)) throw new CorruptCheckpointError('checkpoint is not a byte array')
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (buf.length < FIXED_BYTES) {
    throw new CorruptCheckpointError(`checkpoint is ${buf.length} bytes, shorter than the smallest possible (${FIXED_BYTES})`)
  }
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new CorruptCheckpointError('not a checkpoint (bad magic)')
  let at = MAGIC.length
  const formatVersion = buf.readUInt8(at)
  at += 1
  if (formatVersion !== CHECKPOINT_FORMAT_VERSION) {
    throw new CorruptCheckpointError(
      `unsupported checkpoint format version ${formatVersion} (this build reads ${CHECKPOINT_FORMAT_VERSION})`,
    )
  }
  const headerLength = buf.readUInt32LE(at)
  at += 4
  // Each length is compared with what is left before anything is sliced or allocated.
  if (headerLength > buf.length - FIXED_BYTES) {
    throw new CorruptCheckpointError(`header length ${headerLength} runs past the end of the ${buf.length}-byte checkpoint`)
  }
  const headerBytes = buf.subarray(at, at + headerLength)
  at += headerLength
  const compressedLength = buf.readUInt32LE(at)
  at += 4
  if (compressedLength !== buf.length - at - CHECKSUM_BYTES) {
    throw new CorruptCheckpointError(
      `compressed memory length ${compressedLength} does not match the ${buf.length - at - CHECKSUM_BYTES} bytes present`,
    )
  }
  const compressed = buf.subarray(at, at + compressedLength)
  at += compressedLength
  const expected = buf.subarray(at, at + CHECKSUM_BYTES)
  const actual = createHash('sha256').update(buf.subarray(0, at)).digest()
  if (!actual.equals(expected)) throw new CorruptCheckpointError('checkpoint checksum mismatch (torn or altered file)')

  let json: unknown
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes))
  } catch (err) {
    throw new CorruptCheckpointError(`checkpoint header is not UTF-8 JSON: ${(err as Error).message}`, { cause: err })
  }
  const problem = headerProblem(json)
  if (problem !== undefined) throw new CorruptCheckpointError(`malformed checkpoint header: ${problem}`)
  return { header: json as Header, compressed }
}

// --- globals --------------------------------------------------------------------------------

/**
 * Finite numbers other than -0 go as JSON numbers; JSON has no NaN, Infinity or -0, so those
 * (f32/f64 globals can hold them) go as the 16 hex digits of their float64 bits, which also keeps
 * a NaN's payload. i64 values go as decimal strings.
 */
function encodeGlobal(value: number | bigint): EncodedGlobal {
  if (typeof value === 'bigint') return { i64: value.toString() }
  if (Number.isFinite(value) && !Object.is(value, -0)) return value
  const bits = Buffer.alloc(8)
  bits.writeDoubleBE(value)
  return { f64: bits.toString('hex') }
}

function decodeGlobal(value: EncodedGlobal): number | bigint {
  if (typeof value === 'number') return value
  if ('i64' in value) return BigInt(value.i64)
  return Buffer.from(value.f64, 'hex').readDoubleBE(0)
}

function encodedGlobalProblem(value: unknown): string | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : 'is not a finite number'
  if (!isPlainObject(value)) return 'is neither a number nor a tagged value'
  const keys = Object.keys(value)
  if (keys.length !== 1) return 'has other than exactly one tag'
  if (typeof value.i64 === 'string') {
    if (!/^-?(0|[1-9][0-9]{0,18})$/.test(value.i64)) return 'is not a decimal i64'
    const n = BigInt(value.i64)
    return n < I64_MIN || n > I64_MAX ? 'is outside the i64 range' : undefined
  }
  if (typeof value.f64 === 'string') return /^[0-9a-f]{16}$/.test(value.f64) ? undefined : 'is not 16 hex digits'
  return 'has an unknown tag'
}

// --- shape checks -------------------------------------------------------------------------------

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

function isU32(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xffffffff
}

/** Problems shared by a Checkpoint about to be encoded and a header just decoded. */
function commonProblem(c: Record<string, unknown>): string | undefined {
  if (c.version !== 1) return `version is ${JSON.stringify(c.version)}, not 1`
  if (!isCount(c.sequence)) return 'sequence is not a non-negative safe integer'
  if (typeof c.moduleHash !== 'string') return 'moduleHash is not a string'
  if (typeof c.optionsHash !== 'string') return 'optionsHash is not a string'
  if (!isCount(c.inputOffset)) return 'inputOffset is not a non-negative safe integer'
  if (!isCount(c.outputOffset)) return 'outputOffset is not a non-negative safe integer'
  if (typeof c.timestamp !== 'number' || !Number.isFinite(c.timestamp)) return 'timestamp is not a finite number'
  if (!isPlainObject(c.metadata)) return 'metadata is not an object'
  return undefined
}

function regionProblem(region: unknown): string | undefined {
  if (!isPlainObject(region)) return 'region is not an object'
  if (!isU32(region.ptr)) return 'region.ptr is not a u32'
  if (!isU32(region.size)) return 'region.size is not a u32'
  return undefined
}

function checkpointProblem(c: unknown): string | undefined {
  if (!isPlainObject(c)) return 'not an object'
  const common = commonProblem(c)
  if (common !== undefined) return common
  const guest = c.guest
  if (!isPlainObject(guest)) return 'guest is not an object'
  if (!(guest.memory instanceof Uint8Array)) return 'guest.memory is not a Uint8Array'
  if (guest.memory.byteLength > MAX_WASM32_MEMORY) return 'guest.memory is larger than a wasm32 memory can be'
  if (!Array.isArray(guest.globals)) return 'guest.globals is not an array'
  for (const [i, g] of guest.globals.entries()) {
    if (typeof g === 'bigint') {
      if (g < I64_MIN || g > I64_MAX) return `guest.globals[${i}] is outside the i64 range`
    } else if (typeof g !== 'number') {
      return `guest.globals[${i}] is neither a number nor a bigint`
    }
  }
  return regionProblem(guest.region)
}

function headerProblem(h: unknown): string | undefined {
  if (!isPlainObject(h)) return 'not an object'
  const common = commonProblem(h)
  if (common !== undefined) return common
  if (!Array.isArray(h.globals)) return 'globals is not an array'
  for (const [i, g] of h.globals.entries()) {
    const p = encodedGlobalProblem(g)
    if (p !== undefined) return `globals[${i}] ${p}`
  }
  const region = regionProblem(h.region)
  if (region !== undefined) return region
  if (!isCount(h.memoryLength)) return 'memoryLength is not a non-negative safe integer'
  if (h.memoryLength > MAX_WASM32_MEMORY) return 'memoryLength is larger than a wasm32 memory can be'
  return undefined
}
