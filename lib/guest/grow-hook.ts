/**
 * Makes a refused `memory.grow` known for certain, instead of guessed from how full memory is.
 *
 * Under `limits.memory` the engine returns -1 from `memory.grow` once a step would pass the cap.
 * Real allocators ask in big steps (under a 64 MiB cap a 16 MiB step is refused at 48 MiB) and
 * then trap (C's `abort()`, Rust's allocation-error handler) while memory is nowhere near the
 * cap, so the memory size alone cannot tell the host that the limit was the cause. So, at load,
 * every `memory.grow` in the code section becomes a call to an added function that does the
 * same grow and, when it returns -1, records the request in an added i64 global, exported under
 * a reserved name (`GROW_RECORD_EXPORT`) for the host to read. The guest sees the same results;
 * the extra export is all it could observe.
 *
 * Appending a type, the functions, the global and the export at the end of their index spaces
 * shifts no existing index. Finding the `memory.grow` opcode (0x40) takes decoding every
 * instruction, as the same byte is also a block type, `i32.const 64`, a memarg flag, a
 * shuffle lane... An opcode, type or immediate this decoder does not know makes it give up
 * (`skipped`): the module is then compiled as it was, never half rewritten.
 */
import { WasmSandboxError } from '../errors.js'
import {
  encodeName,
  encodeU32,
  hex,
  parse,
  Reader,
  SECTION_CODE,
  SECTION_CUSTOM,
  SECTION_EXPORT,
  SECTION_FUNCTION,
  SECTION_GLOBAL,
  SECTION_RANK,
  SECTION_TYPE,
  VAL_TYPES,
  PAGE_SIZE,
  type Section,
} from './binary.js'

/** The export the record global gets (`_1`, `_2`, ... appended if the guest has taken it). */
export const GROW_RECORD_EXPORT = '__wasm_sandbox_grow_refused'

export type GrowHookResult =
  | {
      kind: 'hooked'
      bytes: Uint8Array
      /** The export name of the record global. */
      record: string
      /** Index of the first added function: frames there are the host's hook, not the guest. */
      firstHook: number
      /**
       * Pairs `[output offset, shift]`, by output offset: from there to the next pair, the byte
       * at output offset `o` was at `o - shift` in the input. An added `call` takes the place
       * of the `memory.grow` it replaces, so it maps to that instruction's offset.
       */
      offsets: number[]
    }
  /** No `memory.grow` anywhere: nothing to record. */
  | { kind: 'none' }
  /** Something in the code this decoder does not know: left as it was, and why. */
  | { kind: 'skipped'; reason: string }

/** A refused grow as the record holds it. */
export interface GrowRefusal {
  /** Bytes the memory had when the grow was refused. */
  atBytes: number
  /** Bytes it asked for on top of that. */
  askedBytes: number
}

/**
 * Reads the record: 0 while no grow was refused, else `(pages then << 32) | pages asked for`
 * (both u32, as `memory.size` and the operand of `memory.grow` are for a 32-bit memory).
 */
export function readRefusal(record: WebAssembly.Global): GrowRefusal | undefined {
  const value = record.value as bigint
  if (value === 0n) return undefined
  return { atBytes: Number(value >> 32n) * PAGE_SIZE, askedBytes: Number(value & 0xffffffffn) * PAGE_SIZE }
}

// What follows an opcode. Prefixed opcodes (0xfc, 0xfd, 0xfe) have their own tables.
const UNKNOWN = 0
const NONE = 1
const U32 = 2
const U32X2 = 3
const BLOCK = 4
const BR_TABLE = 5
const MEMARG = 6
const GROW = 7
const I32 = 8
const I64 = 9
const BYTES4 = 10
const BYTES8 = 11
const SELECT_T = 12
const HEAP_TYPE = 13
const TRY_TABLE = 14
const BYTES16 = 15
const LANE = 16
const MEMARG_LANE = 17
const ZERO_BYTE = 18
// The prefixes last, so one comparison finds them.
const PREFIX_FC = 19
const PREFIX_FD = 20
const PREFIX_FE = 21

function table(size: number, entries: [kind: number, from: number, to?: number][]): Uint8Array {
  const t = new Uint8Array(size)
  for (const [kind, from, to = from] of entries) t.fill(kind, from, to + 1)
  return t
}

/**
 * Every opcode of the core spec, including SIMD (0xfd), bulk memory and saturating truncation
 * (0xfc), threads (0xfe), tail calls, reference types, exception handling (both the legacy
 * try/catch and try_table) and the parts of typed function references whose operands need no
 * new types. GC (0xfb) is not here: its types are refused at load anyway.
 */
const OPS = table(256, [
  [NONE, 0x00, 0x01], // unreachable, nop
  [BLOCK, 0x02, 0x04], // block, loop, if
  [NONE, 0x05], // else
  [BLOCK, 0x06], // try (legacy exceptions)
  [U32, 0x07, 0x09], // catch, throw, rethrow
  [NONE, 0x0a, 0x0b], // throw_ref, end
  [U32, 0x0c, 0x0d], // br, br_if
  [BR_TABLE, 0x0e],
  [NONE, 0x0f], // return
  [U32, 0x10], // call
  [U32X2, 0x11], // call_indirect type table
  [U32, 0x12], // return_call
  [U32X2, 0x13], // return_call_indirect
  [U32, 0x14, 0x15], // call_ref, return_call_ref
  [U32, 0x18], // delegate
  [NONE, 0x19, 0x1b], // catch_all, drop, select
  [SELECT_T, 0x1c],
  [TRY_TABLE, 0x1f],
  [U32, 0x20, 0x26], // local.get/set/tee, global.get/set, table.get/set
  [MEMARG, 0x28, 0x3e], // loads and stores
  [U32, 0x3f], // memory.size
  [GROW, 0x40], // memory.grow
  [I32, 0x41],
  [I64, 0x42],
  [BYTES4, 0x43], // f32.const
  [BYTES8, 0x44], // f64.const
  [NONE, 0x45, 0xc4], // numeric, sign extension
  [HEAP_TYPE, 0xd0], // ref.null
  [NONE, 0xd1], // ref.is_null
  [U32, 0xd2], // ref.func
  [NONE, 0xd4], // ref.as_non_null
  [U32, 0xd5, 0xd6], // br_on_null, br_on_non_null
  [PREFIX_FC, 0xfc],
  [PREFIX_FD, 0xfd],
  [PREFIX_FE, 0xfe],
])

const FC_OPS = table(18, [
  [NONE, 0, 7], // trunc_sat
  [U32X2, 8], // memory.init data memory
  [U32, 9], // data.drop
  [U32X2, 10], // memory.copy
  [U32, 11], // memory.fill
  [U32X2, 12], // table.init
  [U32, 13], // elem.drop
  [U32X2, 14], // table.copy
  [U32, 15, 17], // table.grow, table.size, table.fill
])

/** SIMD and relaxed SIMD; the gaps are opcodes the proposal left unassigned. */
const FD_OPS = table(0x114, [
  [MEMARG, 0x00, 0x0b], // v128.load*, v128.store
  [BYTES16, 0x0c, 0x0d], // v128.const, i8x16.shuffle
  [NONE, 0x0e, 0x14], // swizzle, splats
  [LANE, 0x15, 0x22], // extract_lane, replace_lane
  [NONE, 0x23, 0x53],
  [MEMARG_LANE, 0x54, 0x5b], // load*_lane, store*_lane
  [MEMARG, 0x5c, 0x5d], // load32_zero, load64_zero
  [NONE, 0x5e, 0x113],
  [UNKNOWN, 0x9a],
  [UNKNOWN, 0xa2],
  [UNKNOWN, 0xa5, 0xa6],
  [UNKNOWN, 0xaf, 0xb0],
  [UNKNOWN, 0xb2, 0xb4],
  [UNKNOWN, 0xbb],
  [UNKNOWN, 0xc2],
  [UNKNOWN, 0xc5, 0xc6],
  [UNKNOWN, 0xcf, 0xd0],
  [UNKNOWN, 0xd2, 0xd4],
  [UNKNOWN, 0xe2],
  [UNKNOWN, 0xee],
])

const FE_OPS = table(0x4f, [
  [MEMARG, 0x00, 0x02], // memory.atomic.notify, wait32, wait64
  [ZERO_BYTE, 0x03], // atomic.fence
  [MEMARG, 0x10, 0x4e], // atomic loads, stores, read-modify-writes
])

/** `VAL_TYPES` as a table, for the hot loop. */
const IS_VAL_TYPE = new Uint8Array(256)
for (const b of VAL_TYPES.keys()) IS_VAL_TYPE[b] = 1

/** Thrown inside the decoder for anything it does not know; caught into `skipped`. */
class Unsupported extends Error {}

function unsupported(what: string, at: number): never {
  throw new Unsupported(`${what} at byte offset ${at}`)
}

/** The value of the LEB128 `read` last stepped over (a variable, not a pair, so nothing is allocated per instruction). */
let lebValue = 0

/**
 * Past the LEB128 at `pos`, signed or not: only the continuation bits matter. Past the end of
 * the array a byte reads as `undefined`, which ends it; `scanBody` then finds itself past the
 * end of the body. At most 10 bytes, as any valid LEB.
 */
function skip(bytes: Uint8Array, pos: number): number {
  const stop = pos + 10
  while ((bytes[pos++]! & 0x80) !== 0 && pos < stop) continue
  return pos
}

/**
 * As `skip`, keeping the value in `lebValue`: for small unsigned values (sub-opcodes, flags,
 * indices, counts), kept a small integer so storing it allocates nothing.
 */
function read(bytes: Uint8Array, pos: number): number {
  let b = bytes[pos++]!
  let value = b & 0x7f
  for (let shift = 7; (b & 0x80) !== 0 && shift < 35; shift += 7) {
    b = bytes[pos++]!
    value |= (b & 0x7f) << shift
  }
  lebValue = value >>> 0
  return (b & 0x80) !== 0 ? skip(bytes, pos) : pos
}

/** Past a block type: empty, a value type, or a type index (a non-negative s33). */
function blockType(bytes: Uint8Array, pos: number): number {
  const b = bytes[pos]!
  if (b === 0x40 || IS_VAL_TYPE[b] === 1) return pos + 1
  // Any other one-byte negative s33 is a reference type with a heap type after it.
  if ((b & 0xc0) === 0x40) unsupported(`block type 0x${hex(b)}`, pos)
  const end = skip(bytes, pos)
  if ((bytes[end - 1]! & 0x40) !== 0) unsupported('negative block type', pos)
  return end
}

/** Past a memarg: alignment flags (bit 6: a memory index follows, multi-memory), then the offset. */
function memarg(bytes: Uint8Array, pos: number): number {
  pos = read(bytes, pos)
  if ((lebValue & 0x40) !== 0) pos = skip(bytes, pos)
  return skip(bytes, pos)
}

/**
 * Steps over one function body (`r` spans exactly it), pushing `[opcode offset, end of its
 * immediate, memory index]` for each `memory.grow` onto `sites`. The local declarations go
 * through the checked reader; the instructions, the bulk of any module, are read straight from
 * the bytes (it runs at load, over every byte of code), checking only that the last
 * instruction ends exactly at the end of the body. LEB widths are not checked: the engine
 * validates the module after the rewrite, and an invalid one is compiled unhooked (load.ts).
 */
function scanBody(r: Reader, sites: number[]): void {
  const decls = r.count('local declaration')
  for (let i = 0; i < decls; i++) {
    r.u32('local count')
    const at = r.pos
    const t = r.u8('local type')
    if (!VAL_TYPES.has(t)) unsupported(`local of type 0x${hex(t)}`, at)
  }
  const bytes = r.bytes
  const end = r.end
  let pos = r.pos
  while (pos < end) {
    const at = pos
    const op = bytes[pos++]!
    let kind = OPS[op]!
    let sub = -1
    if (kind === NONE) continue
    if (kind >= PREFIX_FC) {
      pos = read(bytes, pos)
      sub = lebValue
      const ops = kind === PREFIX_FC ? FC_OPS : kind === PREFIX_FD ? FD_OPS : FE_OPS
      kind = sub < ops.length ? ops[sub]! : UNKNOWN
    }
    switch (kind) {
      case NONE: // a prefixed opcode without immediates
        break
      case U32:
      case I32:
      case I64:
        if (bytes[pos]! < 0x80) pos++
        else pos = skip(bytes, pos)
        break
      case U32X2:
        pos = skip(bytes, skip(bytes, pos))
        break
      case BLOCK:
        pos = blockType(bytes, pos)
        break
      case BR_TABLE: {
        pos = read(bytes, pos)
        // Labels, then the default; a lying count runs past the end and stops there.
        for (let n = lebValue; n >= 0 && pos <= end; n--) pos = skip(bytes, pos)
        break
      }
      case MEMARG:
        pos = memarg(bytes, pos)
        break
      case MEMARG_LANE:
        pos = memarg(bytes, pos) + 1
        break
      case GROW:
        pos = read(bytes, pos)
        sites.push(at, pos, lebValue)
        break
      case BYTES4:
        pos += 4
        break
      case BYTES8:
        pos += 8
        break
      case BYTES16:
        pos += 16
        break
      case LANE:
        pos += 1
        break
      case ZERO_BYTE:
        if (bytes[pos++] !== 0) unsupported('atomic.fence flags', pos - 1)
        break
      case SELECT_T: {
        pos = read(bytes, pos)
        for (let n = lebValue; n > 0 && pos <= end; n--, pos++) {
          if (IS_VAL_TYPE[bytes[pos]!] !== 1) unsupported(`select type 0x${hex(bytes[pos] ?? 0)}`, pos)
        }
        break
      }
      case HEAP_TYPE: {
        const h = bytes[pos++]!
        if (h !== 0x70 && h !== 0x6f) unsupported(`heap type 0x${hex(h ?? 0)}`, pos - 1)
        break
      }
      case TRY_TABLE: {
        pos = read(bytes, blockType(bytes, pos))
        for (let n = lebValue; n > 0 && pos <= end; n--) {
          const c = bytes[pos++]!
          if (c > 3) unsupported(`catch kind ${c}`, pos - 1)
          if (c <= 1) pos = skip(bytes, pos) // the tag
          pos = skip(bytes, pos) // the label
        }
        break
      }
      default:
        unsupported(sub < 0 ? `opcode 0x${hex(op)}` : `opcode 0x${hex(op)} ${sub}`, at)
    }
  }
  if (pos !== end) unsupported('an instruction runs past the end of its function body', end)
}

/** Offsets of every `40 00` and `40 80` in `[start, end)`, ascending: where a memory.grow of memory 0 may be. */
function growCandidates(bytes: Uint8Array, start: number, end: number): number[] {
  const out: number[] = []
  for (let at = bytes.indexOf(0x40, start); at >= 0 && at < end; at = bytes.indexOf(0x40, at + 1)) {
    const next = bytes[at + 1]
    if (next === 0x00 || next === 0x80) out.push(at)
  }
  return out
}

/** A function body with at least one `memory.grow`. */
interface Body {
  /** Offset of its size LEB. */
  sizeAt: number
  start: number
  end: number
  /** Triples from `scanBody`. */
  sites: number[]
}

/** The output, with where each copied run came from in the input. */
class Output {
  readonly parts: ArrayLike<number>[] = []
  length = 0
  /** Pairs `[output offset, input offset]`, one where each copied run starts. */
  readonly anchors: number[] = []

  constructor(private readonly input: Uint8Array) {}

  copy(from: number, to: number): void {
    if (to <= from) return
    this.anchors.push(this.length, from)
    this.parts.push(this.input.subarray(from, to))
    this.length += to - from
  }

  add(bytes: ArrayLike<number>): void {
    this.parts.push(bytes)
    this.length += bytes.length
  }

  /** Appends `payload` as section `id` (fresh size prefix), keeping its anchors. */
  section(id: number, payload: Output): void {
    this.add([id, ...encodeU32(payload.length)])
    for (let i = 0; i < payload.anchors.length; i += 2) this.anchors.push(payload.anchors[i]! + this.length, payload.anchors[i + 1]!)
    for (const p of payload.parts) this.parts.push(p)
    this.length += payload.length
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.length)
    let at = 0
    for (const p of this.parts) {
      out.set(p, at)
      at += p.length
    }
    return out
  }
}

/** A vector section's count and where its entries start; 0 and the end when absent. */
function vector(bytes: Uint8Array, section: Section | undefined, moduleName: string): { count: number; entries: number } {
  if (!section) return { count: 0, entries: 0 }
  const r = new Reader(bytes, section.payloadStart, section.end, moduleName)
  return { count: r.u32('count'), entries: r.pos }
}

/**
 * The hook for one memory: `memory.grow` as before, and on -1 the request in the record.
 * (param $pages i32) (result i32) (local $old i32)
 */
function hookBody(memory: number, record: number): number[] {
  const m = encodeU32(memory)
  const g = encodeU32(record)
  // prettier-ignore
  const code = [
    0x01, 0x01, 0x7f, // one i32 local
    0x20, 0x00, 0x40, ...m, 0x22, 0x01, // local.tee $old (memory.grow (local.get $pages))
    0x41, 0x7f, 0x46, 0x04, 0x40, // if (i32.eq (local.get $old) (i32.const -1))
    0x3f, ...m, 0xad, 0x42, 0x20, 0x86, // (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 32))
    0x20, 0x00, 0xad, 0x84, 0x24, ...g, // global.set $record (i64.or ... (i64.extend_i32_u (local.get $pages)))
    0x0b, 0x20, 0x01, 0x0b, // end, local.get $old, end
  ]
  return [...encodeU32(code.length), ...code]
}

/**
 * Rewrites every `memory.grow` of `bytes` to record a refusal (see the top of this file).
 * `bytes` must have been parsed already (it is the module after the other load-time rewrites):
 * a malformed code section is `skipped` here and left to the engine to report.
 */
export function hookMemoryGrow(bytes: Uint8Array, moduleName = '<module>'): GrowHookResult {
  const parsed = parse(bytes, moduleName)
  const { info, sections } = parsed
  const find = (id: number): Section | undefined => sections.find((s) => s.id === id)
  const code = find(SECTION_CODE)
  if (!code) return { kind: 'none' }

  const bodies: Body[] = []
  let bodyCount: number
  let bodiesStart: number
  // With one memory, memory.grow is 0x40 then a memory index of 0: `40 00`, or padded `40 80 ...`.
  // A body without that pair has none and is not decoded: most bodies, decoding being the cost.
  const memories = info.memories.length + info.imports.filter((i) => i.kind === 'memory').length
  const candidates = memories <= 1 ? growCandidates(bytes, code.payloadStart, code.end) : undefined
  let next = 0
  try {
    const r = new Reader(bytes, code.payloadStart, code.end, moduleName)
    bodyCount = r.count('function body')
    bodiesStart = r.pos
    for (let i = 0; i < bodyCount; i++) {
      const sizeAt = r.pos
      const size = r.u32('function body size')
      if (size > r.remaining) r.fail('function body runs past the code section')
      if (candidates) {
        while (next < candidates.length && candidates[next]! < r.pos) next++
        if (next === candidates.length || candidates[next]! >= r.pos + size) {
          r.pos += size
          continue
        }
      }
      const sites: number[] = []
      scanBody(new Reader(bytes, r.pos, r.pos + size, moduleName), sites)
      if (sites.length > 0) bodies.push({ sizeAt, start: r.pos, end: r.pos + size, sites })
      r.pos += size
    }
  } catch (err) {
    if (err instanceof Unsupported || err instanceof WasmSandboxError) return { kind: 'skipped', reason: err.message }
    return { kind: 'skipped', reason: `could not decode the code section (${(err as Error)?.message ?? String(err)})` }
  }
  if (bodies.length === 0) return { kind: 'none' }

  const typeSection = find(SECTION_TYPE)
  const funcSection = find(SECTION_FUNCTION)
  if (!typeSection || !funcSection) return { kind: 'skipped', reason: 'code without a type or function section' }
  const types = vector(bytes, typeSection, moduleName)
  const funcs = vector(bytes, funcSection, moduleName)
  const globals = vector(bytes, find(SECTION_GLOBAL), moduleName)

  // One hook per memory that is grown (more than memory 0 only with multi-memory).
  const hookOf = new Map<number, number>()
  const firstHook = info.imports.filter((i) => i.kind === 'function').length + funcs.count
  for (const b of bodies) for (let i = 2; i < b.sites.length; i += 3) if (!hookOf.has(b.sites[i]!)) hookOf.set(b.sites[i]!, firstHook + hookOf.size)
  const hookType = types.count
  const recordIndex = info.globals.length
  const taken = new Set(info.exports.map((e) => e.name))
  let record = GROW_RECORD_EXPORT
  for (let n = 1; taken.has(record); n++) record = `${GROW_RECORD_EXPORT}_${n}`

  const globalPayload = (): Output => {
    const p = new Output(bytes)
    p.add(encodeU32(globals.count + 1))
    if (globals.entries !== 0) p.copy(globals.entries, find(SECTION_GLOBAL)!.end)
    p.add([0x7e, 0x01, 0x42, 0x00, 0x0b]) // (global (mut i64) (i64.const 0))
    return p
  }
  const exportPayload = (): Output => {
    const p = new Output(bytes)
    p.add(encodeU32(parsed.exportCount + 1))
    if (parsed.exportSection) p.copy(parsed.exportEntriesStart, parsed.exportSection.end)
    p.add([...encodeName(record), 0x03, ...encodeU32(recordIndex)])
    return p
  }

  const out = new Output(bytes)
  out.copy(0, 8)
  let globalDone = false
  let exportDone = false
  // A missing global or export section goes before the first section that must follow it.
  const insertMissing = (rank: number): void => {
    if (!globalDone && rank > SECTION_RANK.get(SECTION_GLOBAL)!) {
      out.section(SECTION_GLOBAL, globalPayload())
      globalDone = true
    }
    if (!exportDone && rank > SECTION_RANK.get(SECTION_EXPORT)!) {
      out.section(SECTION_EXPORT, exportPayload())
      exportDone = true
    }
  }
  for (const s of sections) {
    if (s.id !== SECTION_CUSTOM) insertMissing(SECTION_RANK.get(s.id)!)
    const p = new Output(bytes)
    switch (s.id) {
      case SECTION_TYPE:
        p.add(encodeU32(types.count + 1))
        p.copy(types.entries, s.end)
        p.add([0x60, 0x01, 0x7f, 0x01, 0x7f]) // (func (param i32) (result i32))
        break
      case SECTION_FUNCTION:
        p.add(encodeU32(funcs.count + hookOf.size))
        p.copy(funcs.entries, s.end)
        for (let i = 0; i < hookOf.size; i++) p.add(encodeU32(hookType))
        break
      case SECTION_GLOBAL:
        out.section(s.id, globalPayload())
        globalDone = true
        continue
      case SECTION_EXPORT:
        out.section(s.id, exportPayload())
        exportDone = true
        continue
      case SECTION_CODE: {
        p.add(encodeU32(bodyCount + hookOf.size))
        let copied = bodiesStart
        for (const b of bodies) {
          p.copy(copied, b.sizeAt)
          let size = b.end - b.start
          const calls: number[][] = []
          for (let i = 0; i < b.sites.length; i += 3) {
            const call = [0x10, ...encodeU32(hookOf.get(b.sites[i + 2]!)!)]
            calls.push(call)
            size += call.length - (b.sites[i + 1]! - b.sites[i]!)
          }
          p.add(encodeU32(size))
          let from = b.start
          for (let i = 0; i < b.sites.length; i += 3) {
            p.copy(from, b.sites[i]!)
            p.add(calls[i / 3]!)
            from = b.sites[i + 1]!
          }
          p.copy(from, b.end)
          copied = b.end
        }
        p.copy(copied, s.end)
        for (const [memory] of hookOf) p.add(hookBody(memory, recordIndex))
        break
      }
      default:
        out.copy(s.start, s.end)
        continue
    }
    out.section(s.id, p)
  }
  insertMissing(Infinity)

  const offsets: number[] = []
  for (let i = 0; i < out.anchors.length; i += 2) {
    const shift = out.anchors[i]! - out.anchors[i + 1]!
    if (offsets.length === 0 || offsets[offsets.length - 1] !== shift) offsets.push(out.anchors[i]!, shift)
  }
  return { kind: 'hooked', bytes: out.bytes(), record, firstHook, offsets }
}

/**
 * Where a byte offset of the compiled module was in the guest's own file, given pairs
 * `[offset, shift]` as in `offsets` above (ascending): the last pair at or before it applies.
 */
export function originalOffset(offsets: readonly number[], offset: number): number {
  let lo = 0
  let hi = offsets.length / 2 - 1
  if (hi < 0 || offset < offsets[0]!) return offset
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (offsets[2 * mid]! <= offset) lo = mid
    else hi = mid - 1
  }
  return offset - offsets[2 * lo + 1]!
}
