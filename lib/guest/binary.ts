/**
 * A small WebAssembly binary reader and rewriter, run once per guest at load time.
 *
 * Why not lean on `WebAssembly.Module` alone: the JS API cannot tell us a memory's declared
 * maximum or which globals are mutable, and it cannot change either. Limits must be enforced
 * in the binary itself *before* compilation so the engine, not the host, refuses growth past
 * the limit. Because the bytes come from untrusted guests, every read is bounds-checked, every
 * count is checked against the bytes that remain before anything is sized from it, and every
 * failure surfaces as one error type (`ERR_WASM_INVALID_MODULE`) that callers can branch on.
 *
 * Only the sections the sandbox needs are decoded (type, import, function, memory, global,
 * export, start); the rest are skipped by size. Function bodies are decoded by grow-hook.ts,
 * with this reader, and only to find `memory.grow`. The `name` custom section is read on its own,
 * and only when a trap needs function names (`readFunctionNames`). This is not a full validator: a module this
 * reader accepts can still be rejected by the engine, which validates everything again.
 */
import { errors, WasmSandboxError } from '../errors.js'

export type ValType = 'i32' | 'i64' | 'f32' | 'f64' | 'v128' | 'funcref' | 'externref'

export interface FuncType {
  params: ValType[]
  results: ValType[]
}

/** Sizes are in 64 KiB pages, as in the binary, so no precision is lost for memory64 guests. */
export interface MemoryLimits {
  initial: number
  maximum: number | undefined
  shared: boolean
  memory64: boolean
}

export type ExternKind = 'function' | 'table' | 'memory' | 'global' | 'tag'

export interface ImportEntry {
  module: string
  name: string
  kind: ExternKind
  /** Present for function imports, so the host can check signatures before instantiating. */
  funcType?: FuncType
  /** Present for memory imports, so the host can size the memory it provides. */
  memory?: MemoryLimits
}

export interface ExportEntry {
  name: string
  kind: ExternKind
  index: number
  /** Present for function exports, so ABI checks can compare signatures without instantiating. */
  funcType?: FuncType
}

export interface GlobalEntry {
  /** Index in the global index space (imports first), which is what exports and `global.get` use. */
  index: number
  valType: ValType
  mutable: boolean
  imported: boolean
  /** Every name this global is exported under; empty when the host cannot reach it. */
  exportNames: string[]
}

export interface ModuleInfo {
  imports: ImportEntry[]
  exports: ExportEntry[]
  /** Defined (non-imported) memories, in order; imported ones are in `imports`. */
  memories: MemoryLimits[]
  /** The whole global index space: imported globals first, then defined ones. */
  globals: GlobalEntry[]
  hasStart: boolean
}

/** Bytes per WebAssembly page; limits are expressed in pages. */
export const PAGE_SIZE = 65536

/** The most pages a 32-bit memory may declare (4 GiB). */
const MAX_PAGES_32 = 65536
/** The most pages a 64-bit memory may declare (2^64 bytes). */
const MAX_PAGES_64 = 2 ** 48

const DEFAULT_MODULE_NAME = '<module>'
const DEFAULT_GLOBAL_PREFIX = '__wasm_sandbox_global_'

export const SECTION_CUSTOM = 0
export const SECTION_TYPE = 1
const SECTION_IMPORT = 2
export const SECTION_FUNCTION = 3
const SECTION_TABLE = 4
const SECTION_MEMORY = 5
export const SECTION_GLOBAL = 6
export const SECTION_EXPORT = 7
const SECTION_START = 8
export const SECTION_CODE = 10
const SECTION_TAG = 13

/**
 * Position of each non-custom section in the required order. The ids are not in order
 * (tag, 13, sits between memory and global; datacount, 12, between element and code), so
 * ordering is checked by rank, which also rejects duplicate sections.
 */
export const SECTION_RANK: ReadonlyMap<number, number> = new Map([
  [1, 1], // type
  [2, 2], // import
  [3, 3], // function
  [4, 4], // table
  [5, 5], // memory
  [13, 6], // tag
  [6, 7], // global
  [7, 8], // export
  [8, 9], // start
  [9, 10], // element
  [12, 11], // datacount
  [10, 12], // code
  [11, 13], // data
])

export const VAL_TYPES: ReadonlyMap<number, ValType> = new Map([
  [0x7f, 'i32'],
  [0x7e, 'i64'],
  [0x7d, 'f32'],
  [0x7c, 'f64'],
  [0x7b, 'v128'],
  [0x70, 'funcref'],
  [0x6f, 'externref'],
])

const EXTERN_KINDS: readonly ExternKind[] = ['function', 'table', 'memory', 'global', 'tag']

// Fatal so that malformed names are rejected rather than silently replaced with U+FFFD, which
// would let two different byte strings collide as the same export name.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true })
const utf8Encoder = new TextEncoder()

/**
 * Bounds-checked cursor over one region of the module. Each section gets its own reader whose
 * `end` is the section's end, so a lying count inside a section can never read past it.
 */
export class Reader {
  pos: number

  constructor(
    readonly bytes: Uint8Array,
    start: number,
    readonly end: number,
    readonly moduleName: string,
  ) {
    this.pos = start
  }

  fail(reason: string, at: number = this.pos): never {
    throw errors.invalidModule(this.moduleName, `${reason} (at byte offset ${at})`)
  }

  get remaining(): number {
    return this.end - this.pos
  }

  u8(what: string): number {
    if (this.pos >= this.end) this.fail(`unexpected end while reading ${what}`)
    return this.bytes[this.pos++]!
  }

  skip(n: number, what: string): void {
    if (n > this.remaining) this.fail(`unexpected end while reading ${what}`)
    this.pos += n
  }

  /** Unsigned LEB128, at most 5 bytes, value < 2^32. Redundant zero padding is allowed, as in the spec. */
  u32(what: string): number {
    const start = this.pos
    let result = 0
    for (let i = 0; i < 5; i++) {
      const b = this.u8(what)
      // Byte 5 carries only bits 28..31: anything above, or a continuation bit, is invalid.
      if (i === 4 && (b & 0xf0) !== 0) this.fail(`${what}: LEB128 u32 is too long or out of range`, start)
      result += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) return result
    }
    return this.fail(`${what}: LEB128 u32 is too long`, start)
  }

  /**
   * Unsigned LEB128 up to 64 bits, as a number. Values beyond 2^53 cannot be page counts of any
   * real memory (the memory64 cap is 2^48 pages), so they are refused rather than rounded.
   */
  u64(what: string): number {
    const start = this.pos
    let result = 0
    for (let i = 0; i < 10; i++) {
      const b = this.u8(what)
      if (i === 9 && (b & 0xfe) !== 0) this.fail(`${what}: LEB128 u64 is too long or out of range`, start)
      result += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) {
        if (result > Number.MAX_SAFE_INTEGER) this.fail(`${what}: value is out of range`, start)
        return result
      }
    }
    return this.fail(`${what}: LEB128 u64 is too long`, start)
  }

  /**
   * Checks a LEB128 of the given width without materialising its value: constant expressions
   * only need to be stepped over, and a 64-bit value does not fit a JS number anyway.
   */
  skipLeb(bits: number, signed: boolean, what: string): void {
    const start = this.pos
    const maxBytes = Math.ceil(bits / 7)
    for (let i = 0; i < maxBytes; i++) {
      const b = this.u8(what)
      if (i < maxBytes - 1) {
        if ((b & 0x80) === 0) return
        continue
      }
      // Last permitted byte: no continuation, and the bits beyond the width must be zero
      // (unsigned) or copies of the sign bit (signed).
      const used = bits - 7 * (maxBytes - 1)
      const high = (b & 0x7f) >> (signed ? used - 1 : used)
      const ok = (b & 0x80) === 0 && (high === 0 || (signed && high === 0x7f >> (used - 1)))
      if (!ok) this.fail(`${what}: LEB128 ${signed ? 's' : 'u'}${bits} is too long or out of range`, start)
    }
  }

  /**
   * A vector length. Every element takes at least one byte, so a count larger than the bytes
   * left is a lie; refusing it up front keeps hostile counts from driving allocation or loops.
   */
  count(what: string): number {
    const start = this.pos
    const n = this.u32(`${what} count`)
    if (n > this.remaining) this.fail(`${what} count ${n} exceeds the ${this.remaining} bytes left`, start)
    return n
  }

  name(what: string): string {
    const len = this.count(what)
    const start = this.pos
    this.pos += len
    try {
      // A copy, not a view: TextDecoder refuses views of a SharedArrayBuffer, which would be
      // misreported as bad UTF-8. Names are short, so the copy is cheap.
      return utf8Decoder.decode(this.bytes.slice(start, this.pos))
    } catch {
      return this.fail(`${what} is not valid UTF-8`, start)
    }
  }

  valType(what: string): ValType {
    const at = this.pos
    const b = this.u8(what)
    const t = VAL_TYPES.get(b)
    if (t === undefined) this.fail(`unsupported value type 0x${hex(b)} in ${what}`, at)
    return t
  }

  limits(what: string, allowMemoryFlags: boolean): MemoryLimits {
    const at = this.pos
    const flags = this.u8(`${what} limits flags`)
    const maxFlag = allowMemoryFlags ? 0x07 : 0x05
    if (flags > maxFlag || (!allowMemoryFlags && (flags & 0x02) !== 0)) {
      this.fail(`unsupported ${what} limits flags 0x${hex(flags)}`, at)
    }
    const hasMax = (flags & 0x01) !== 0
    const shared = (flags & 0x02) !== 0
    const memory64 = (flags & 0x04) !== 0
    if (shared && !hasMax) this.fail(`shared ${what} must declare a maximum`, at)
    const read = memory64 ? () => this.u64(`${what} limits`) : () => this.u32(`${what} limits`)
    const initial = read()
    const maximum = hasMax ? read() : undefined
    if (maximum !== undefined && initial > maximum) {
      this.fail(`${what} initial size ${initial} is larger than its maximum ${maximum}`, at)
    }
    if (allowMemoryFlags) {
      const cap = memory64 ? MAX_PAGES_64 : MAX_PAGES_32
      if (initial > cap || (maximum !== undefined && maximum > cap)) {
        this.fail(`memory size is over the ${cap} page limit`, at)
      }
    }
    return { initial, maximum, shared, memory64 }
  }

  /**
   * Steps over a constant expression. The sandbox never evaluates init expressions; it only
   * needs to find where they end, so each accepted opcode is decoded just enough to skip it.
   */
  constExpr(what: string): void {
    for (;;) {
      const at = this.pos
      const op = this.u8(what)
      switch (op) {
        case 0x0b: // end
          return
        case 0x41: // i32.const
          this.skipLeb(32, true, what)
          break
        case 0x42: // i64.const
          this.skipLeb(64, true, what)
          break
        case 0x43: // f32.const
          this.skip(4, what)
          break
        case 0x44: // f64.const
          this.skip(8, what)
          break
        case 0x23: // global.get
        case 0xd2: // ref.func
          this.u32(what)
          break
        case 0xd0: {
          // ref.null: only the abstract heap types this reader understands
          const ht = this.u8(what)
          if (ht !== 0x70 && ht !== 0x6f) this.fail(`unsupported heap type 0x${hex(ht)} in ${what}`, at + 1)
          break
        }
        case 0xfd: {
          const sub = this.u32(what)
          if (sub !== 12) this.fail(`unsupported instruction 0xfd ${sub} in ${what}`, at)
          this.skip(16, what) // v128.const
          break
        }
        case 0x6a: // i32.add
        case 0x6b: // i32.sub
        case 0x6c: // i32.mul
        case 0x7c: // i64.add
        case 0x7d: // i64.sub
        case 0x7e: // i64.mul
          break
        default:
          this.fail(`unsupported instruction 0x${hex(op)} in ${what}`, at)
      }
    }
  }
}

export function hex(b: number): string {
  return b.toString(16).padStart(2, '0')
}

export interface Section {
  id: number
  /** Offset of the id byte. */
  start: number
  payloadStart: number
  /** Offset just past the payload. */
  end: number
}

/** Where one memory's limits are encoded, so they can be replaced without touching anything else. */
interface MemorySite {
  section: Section
  start: number
  end: number
  limits: MemoryLimits
}

interface Parsed {
  info: ModuleInfo
  sections: Section[]
  memorySites: MemorySite[]
  exportSection: Section | undefined
  /** Offset just past the export count LEB, where the entries start. */
  exportEntriesStart: number
  exportCount: number
}

export function parse(bytes: Uint8Array, moduleName: string): Parsed {
  if (!(bytes instanceof Uint8Array)) {
    throw errors.invalidModule(moduleName, 'expected the module bytes as a Uint8Array')
  }
  const top: Reader = new Reader(bytes, 0, bytes.length, moduleName)
  if (bytes.length < 8) top.fail('too short for a WebAssembly header', 0)
  if (bytes[0] !== 0x00 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    top.fail('bad magic number (expected \\0asm)', 0)
  }
  if (bytes[4] !== 0x01 || bytes[5] !== 0x00 || bytes[6] !== 0x00 || bytes[7] !== 0x00) {
    top.fail('unsupported binary version (expected 1; component binaries are not supported)', 4)
  }
  top.pos = 8

  const info: ModuleInfo = { imports: [], exports: [], memories: [], globals: [], hasStart: false }
  const sections: Section[] = []
  const memorySites: MemorySite[] = []
  const types: FuncType[] = []
  /** Type of every function in the function index space (imports first). */
  const funcs: FuncType[] = []
  let tableCount = 0
  let memoryCount = 0
  let tagCount = 0
  let exportSection: Section | undefined
  let exportEntriesStart = 0
  let exportCount = 0
  let lastRank = 0

  while (top.pos < top.end) {
    const start = top.pos
    const id = top.u8('section id')
    const size = top.u32('section size')
    if (size > top.remaining) top.fail(`section ${id} size ${size} runs past the end of the module`, start)
    const section: Section = { id, start, payloadStart: top.pos, end: top.pos + size }
    top.pos = section.end
    sections.push(section)

    if (id !== SECTION_CUSTOM) {
      const rank = SECTION_RANK.get(id)
      if (rank === undefined) top.fail(`unknown section id ${id}`, start)
      if (rank <= lastRank) top.fail(`section ${id} is duplicated or out of order`, start)
      lastRank = rank
    }

    const r: Reader = new Reader(bytes, section.payloadStart, section.end, moduleName)
    const typeIndex = (what: string): FuncType => {
      const at = r.pos
      const i = r.u32(what)
      const t = types[i]
      if (t === undefined) r.fail(`${what} ${i} is out of range (${types.length} types)`, at)
      return t
    }

    switch (id) {
      case SECTION_TYPE: {
        const n = r.count('type')
        for (let i = 0; i < n; i++) {
          const at = r.pos
          const form = r.u8('type form')
          if (form !== 0x60) {
            r.fail(`unsupported type form 0x${hex(form)} (only plain function types are supported, not GC types)`, at)
          }
          const params: ValType[] = []
          const np = r.count('param')
          for (let j = 0; j < np; j++) params.push(r.valType('function params'))
          const results: ValType[] = []
          const nr = r.count('result')
          for (let j = 0; j < nr; j++) results.push(r.valType('function results'))
          types.push({ params, results })
        }
        break
      }
      case SECTION_IMPORT: {
        const n = r.count('import')
        for (let i = 0; i < n; i++) {
          const module = r.name('import module name')
          const name = r.name('import name')
          const at = r.pos
          const kindByte = r.u8('import kind')
          switch (kindByte) {
            case 0x00: {
              const funcType = typeIndex('imported function type index')
              funcs.push(funcType)
              info.imports.push({ module, name, kind: 'function', funcType })
              break
            }
            case 0x01: {
              const rt = r.valType('imported table')
              if (rt !== 'funcref' && rt !== 'externref') r.fail(`table element type must be a reference type`, at + 1)
              r.limits('table', false)
              tableCount++
              info.imports.push({ module, name, kind: 'table' })
              break
            }
            case 0x02: {
              const limitsStart = r.pos
              const memory = r.limits('memory', true)
              memorySites.push({ section, start: limitsStart, end: r.pos, limits: memory })
              memoryCount++
              info.imports.push({ module, name, kind: 'memory', memory })
              break
            }
            case 0x03: {
              const valType = r.valType('imported global')
              const mut = r.u8('global mutability')
              if (mut > 1) r.fail(`invalid global mutability ${mut}`, r.pos - 1)
              info.globals.push({ index: info.globals.length, valType, mutable: mut === 1, imported: true, exportNames: [] })
              info.imports.push({ module, name, kind: 'global' })
              break
            }
            case 0x04: {
              const attr = r.u8('tag attribute')
              if (attr !== 0) r.fail(`invalid tag attribute ${attr}`, r.pos - 1)
              typeIndex('imported tag type index')
              tagCount++
              info.imports.push({ module, name, kind: 'tag' })
              break
            }
            default:
              r.fail(`unknown import kind 0x${hex(kindByte)}`, at)
          }
        }
        break
      }
      case SECTION_FUNCTION: {
        const n = r.count('function')
        for (let i = 0; i < n; i++) funcs.push(typeIndex('function type index'))
        break
      }
      case SECTION_TABLE:
      case SECTION_TAG:
        // Only the count matters (to range-check exports); the entries are left to the engine.
        if (id === SECTION_TABLE) tableCount += r.count('table')
        else tagCount += r.count('tag')
        r.pos = r.end
        break
      case SECTION_MEMORY: {
        const n = r.count('memory')
        for (let i = 0; i < n; i++) {
          const limitsStart = r.pos
          const memory = r.limits('memory', true)
          memorySites.push({ section, start: limitsStart, end: r.pos, limits: memory })
          info.memories.push(memory)
          memoryCount++
        }
        break
      }
      case SECTION_GLOBAL: {
        const n = r.count('global')
        for (let i = 0; i < n; i++) {
          const valType = r.valType('global')
          const mut = r.u8('global mutability')
          if (mut > 1) r.fail(`invalid global mutability ${mut}`, r.pos - 1)
          r.constExpr('global initializer')
          info.globals.push({ index: info.globals.length, valType, mutable: mut === 1, imported: false, exportNames: [] })
        }
        break
      }
      case SECTION_EXPORT: {
        exportSection = section
        exportCount = r.count('export')
        exportEntriesStart = r.pos
        const seen = new Set<string>()
        for (let i = 0; i < exportCount; i++) {
          const nameAt = r.pos
          const name = r.name('export name')
          if (seen.has(name)) r.fail(`duplicate export name ${JSON.stringify(name)}`, nameAt)
          seen.add(name)
          const kindAt = r.pos
          const kindByte = r.u8('export kind')
          const kind = EXTERN_KINDS[kindByte]
          if (kind === undefined) r.fail(`unknown export kind 0x${hex(kindByte)}`, kindAt)
          const indexAt = r.pos
          const index = r.u32('export index')
          const space =
            kind === 'function'
              ? funcs.length
              : kind === 'table'
                ? tableCount
                : kind === 'memory'
                  ? memoryCount
                  : kind === 'global'
                    ? info.globals.length
                    : tagCount
          if (index >= space) r.fail(`export ${JSON.stringify(name)} refers to ${kind} ${index}, which does not exist`, indexAt)
          const entry: ExportEntry = { name, kind, index }
          if (kind === 'function') entry.funcType = funcs[index]!
          if (kind === 'global') info.globals[index]!.exportNames.push(name)
          info.exports.push(entry)
        }
        break
      }
      case SECTION_START: {
        const at = r.pos
        const f = r.u32('start function index')
        if (f >= funcs.length) r.fail(`start function ${f} does not exist`, at)
        info.hasStart = true
        break
      }
      default:
        // custom, element, datacount, code, data: not needed by the sandbox.
        r.pos = r.end
    }
    if (r.pos !== r.end) r.fail(`section ${id} has ${r.remaining} unexpected trailing bytes`)
  }

  return { info, sections, memorySites, exportSection, exportEntriesStart, exportCount }
}

/** Minimal unsigned LEB128, so rewritten sections never grow more than they must. */
export function encodeU32(n: number): number[] {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n !== 0) b |= 0x80
    out.push(b)
  } while (n !== 0)
  return out
}

export function encodeName(s: string): number[] {
  const utf8 = utf8Encoder.encode(s)
  const out = encodeU32(utf8.length)
  append(out, utf8)
  return out
}

/** Element-wise, because spreading a long name into push() can overflow the call stack. */
function append(out: number[], items: ArrayLike<number>): void {
  for (let i = 0; i < items.length; i++) out.push(items[i]!)
}

function concat(parts: ArrayLike<number>[]): Uint8Array {
  let len = 0
  for (const p of parts) len += p.length
  const out = new Uint8Array(len)
  let off = 0
  for (const p of parts) {
    out.set(p, off)
    off += p.length
  }
  return out
}

/** A section with a fresh size prefix; the payload is whatever the caller assembled. */
function encodeSection(id: number, payload: Uint8Array, moduleName: string): Uint8Array {
  if (payload.length > 0xffffffff) throw errors.invalidModule(moduleName, `rewritten section ${id} is too large`)
  return concat([[id], encodeU32(payload.length), payload])
}

/**
 * Parses just enough of a guest to check it against the sandbox ABI and limits. Throws
 * `ERR_WASM_INVALID_MODULE` for anything malformed so callers never see a raw RangeError or
 * TypeError from hostile input.
 */
export function parseModule(bytes: Uint8Array, moduleName: string = DEFAULT_MODULE_NAME): ModuleInfo {
  return guard(moduleName, () => parse(bytes, moduleName).info)
}

/**
 * Lower every memory's declared maximum (defined memories in the memory section AND memory
 * imports in the import section) to `maxPages`, adding a maximum where none is declared.
 * Returns a new Uint8Array (or the same one if nothing changed). If any memory's initial size
 * exceeds maxPages, throw errors.initialMemoryTooLarge(moduleName, initial*PAGE_SIZE,
 * maxPages*PAGE_SIZE). Shared memories keep their shared flag; memory64 ->
 * invalidModule('memory64 is not supported').
 *
 * The limit lives in the binary, not in host checks, because `memory.grow` runs inside the
 * guest: only a declared maximum makes the engine itself return -1 (or throw from JS) at the
 * limit. Lowering an imported memory's maximum also makes instantiation refuse any host memory
 * that could grow past the limit.
 */
export function limitMemory(bytes: Uint8Array, maxPages: number, moduleName: string = DEFAULT_MODULE_NAME): Uint8Array {
  if (!Number.isInteger(maxPages) || maxPages < 0 || maxPages > MAX_PAGES_32) {
    throw errors.invalidOption(`memory limit must be a whole number of pages between 0 and ${MAX_PAGES_32}, got ${maxPages}`)
  }
  return guard(moduleName, () => {
    const parsed = parse(bytes, moduleName)
    for (const site of parsed.memorySites) {
      if (site.limits.memory64) {
        throw errors.invalidModule(moduleName, `memory64 is not supported (at byte offset ${site.start})`)
      }
    }
    for (const site of parsed.memorySites) {
      if (site.limits.initial > maxPages) {
        throw errors.initialMemoryTooLarge(moduleName, site.limits.initial * PAGE_SIZE, maxPages * PAGE_SIZE)
      }
    }
    const changed = parsed.memorySites.filter((s) => s.limits.maximum === undefined || s.limits.maximum > maxPages)
    if (changed.length === 0) return bytes

    const out: ArrayLike<number>[] = []
    let copied = 0
    // memorySites are in file order, so grouping consecutive sites by section keeps the output in order.
    for (let i = 0; i < changed.length; ) {
      const section = changed[i]!.section
      const payload: ArrayLike<number>[] = []
      let pos = section.payloadStart
      for (; i < changed.length && changed[i]!.section === section; i++) {
        const site = changed[i]!
        payload.push(bytes.subarray(pos, site.start))
        payload.push([site.limits.shared ? 0x03 : 0x01, ...encodeU32(site.limits.initial), ...encodeU32(maxPages)])
        pos = site.end
      }
      payload.push(bytes.subarray(pos, section.end))
      out.push(bytes.subarray(copied, section.start))
      out.push(encodeSection(section.id, concat(payload), moduleName))
      copied = section.end
    }
    out.push(bytes.subarray(copied))
    return concat(out)
  })
}

/**
 * Turns the module's one defined memory into an import of `module`.`field` with the same limits,
 * so the host can hand each new instance a memory it already has. Memory index 0 stays the same
 * (an imported memory comes first in the index space), as do exports and data segments that name
 * it. Returns undefined, changing nothing, unless the module defines exactly one plain 32-bit
 * memory and imports none.
 */
export function importMemory(bytes: Uint8Array, module: string, field: string, moduleName: string = DEFAULT_MODULE_NAME): { bytes: Uint8Array; limits: MemoryLimits } | undefined {
  return guard(moduleName, () => {
    const parsed = parse(bytes, moduleName)
    const [site, ...others] = parsed.memorySites
    if (!site || others.length > 0 || site.section.id !== SECTION_MEMORY) return undefined
    if (site.limits.shared || site.limits.memory64) return undefined
    const entry = [...encodeName(module), ...encodeName(field), 0x02, ...bytes.subarray(site.start, site.end)]
    const imports = parsed.sections.find((s) => s.id === SECTION_IMPORT)
    let importSection: Uint8Array
    if (imports) {
      const r = new Reader(bytes, imports.payloadStart, imports.end, moduleName)
      const count = r.u32('import count')
      importSection = encodeSection(SECTION_IMPORT, concat([encodeU32(count + 1), bytes.subarray(r.pos, imports.end), entry]), moduleName)
    } else {
      importSection = encodeSection(SECTION_IMPORT, concat([[1], entry]), moduleName)
    }
    // Where the import section goes when there was none: before the first section ranked after it.
    const importRank = SECTION_RANK.get(SECTION_IMPORT)!
    // The memory section itself ranks after the import section, so there is always one.
    const insertAt = imports ?? parsed.sections.find((s) => s.id !== SECTION_CUSTOM && SECTION_RANK.get(s.id)! > importRank)!
    const memory = site.section
    const out: ArrayLike<number>[] = []
    let copied = 0
    for (const section of parsed.sections) {
      if (section === insertAt) {
        out.push(bytes.subarray(copied, section.start), importSection)
        copied = section === imports ? section.end : section.start
      }
      if (section === memory) {
        out.push(bytes.subarray(copied, section.start))
        copied = section.end
      }
    }
    out.push(bytes.subarray(copied))
    return { bytes: concat(out), limits: site.limits }
  })
}

/**
 * Export every mutable global that the module does not already export, under
 * `${prefix}${globalIndex}` (default prefix '__wasm_sandbox_global_'), so a host can read/restore
 * guest state without its help. Returns the new bytes and, for every mutable global (exported
 * before or not, defined or imported), the export name to use for it. If there is no export
 * section, add one (in the correct position in section order: after global section, before
 * start/element/datacount/code/data; custom sections may be anywhere).
 *
 * Mutable globals are where compilers keep the shadow stack pointer and similar state, so a
 * snapshot of linear memory alone cannot restore a guest; exporting them makes the state
 * reachable through `instance.exports` without the guest's cooperation. If a generated name is
 * already taken by some other export, `_1`, `_2`, ... is appended so the module stays valid.
 * Immutable globals are left alone since they cannot diverge from their initial value.
 */
export function exportMutableGlobals(
  bytes: Uint8Array,
  prefix: string = DEFAULT_GLOBAL_PREFIX,
  moduleName: string = DEFAULT_MODULE_NAME,
): { bytes: Uint8Array; globals: { index: number; exportName: string; valType: ValType }[] } {
  // Lone surrogates would be re-encoded as U+FFFD, so the name returned would not be the name exported.
  if (typeof prefix !== 'string' || utf8Decoder.decode(utf8Encoder.encode(prefix)) !== prefix) {
    throw errors.invalidOption('global export prefix must be a well-formed string')
  }
  return guard(moduleName, () => {
    const parsed = parse(bytes, moduleName)
    const taken = new Set(parsed.info.exports.map((e) => e.name))
    const globals: { index: number; exportName: string; valType: ValType }[] = []
    const added: number[] = []
    let addedCount = 0
    for (const g of parsed.info.globals) {
      if (!g.mutable) continue
      let exportName = g.exportNames[0]
      if (exportName === undefined) {
        const base = `${prefix}${g.index}`
        exportName = base
        for (let n = 1; taken.has(exportName); n++) exportName = `${base}_${n}`
        taken.add(exportName)
        append(added, encodeName(exportName))
        added.push(0x03)
        append(added, encodeU32(g.index))
        addedCount++
      }
      globals.push({ index: g.index, exportName, valType: g.valType })
    }
    if (addedCount === 0) return { bytes, globals }

    const section = parsed.exportSection
    if (section !== undefined) {
      const payload = concat([
        encodeU32(parsed.exportCount + addedCount),
        bytes.subarray(parsed.exportEntriesStart, section.end),
        added,
      ])
      const rewritten = encodeSection(SECTION_EXPORT, payload, moduleName)
      return { bytes: concat([bytes.subarray(0, section.start), rewritten, bytes.subarray(section.end)]), globals }
    }
    // No export section: it must go before the first section that ranks after it (start,
    // element, datacount, code, data); custom sections impose no order, so they are passed over.
    const exportRank = SECTION_RANK.get(SECTION_EXPORT)!
    const after = parsed.sections.find((s) => s.id !== SECTION_CUSTOM && SECTION_RANK.get(s.id)! > exportRank)
    const at = after === undefined ? bytes.length : after.start
    const inserted = encodeSection(SECTION_EXPORT, concat([encodeU32(addedCount), added]), moduleName)
    return { bytes: concat([bytes.subarray(0, at), inserted, bytes.subarray(at)]), globals }
  })
}

/**
 * Function names from the payload of a `name` custom section (its "function names" subsection,
 * id 1: function index -> name, indices in the whole function index space, imports first), for
 * a trap's backtrace. A custom section is not validated by the engine and must never stop a
 * module from loading, so a malformed one gives the names read before the damage (or none),
 * never an error. Later subsections are not looked at.
 */
export function readFunctionNames(payload: Uint8Array): Map<number, string> {
  const names = new Map<number, string>()
  const r = new Reader(payload, 0, payload.length, DEFAULT_MODULE_NAME)
  try {
    while (r.remaining > 0) {
      const id = r.u8('name subsection id')
      const size = r.u32('name subsection size')
      if (size > r.remaining) return names
      if (id !== 1) {
        r.pos += size
        continue
      }
      const sub = new Reader(payload, r.pos, r.pos + size, DEFAULT_MODULE_NAME)
      const n = sub.count('function name')
      for (let i = 0; i < n; i++) {
        const index = sub.u32('function index')
        names.set(index, sub.name('function name'))
      }
      return names
    }
  } catch {
    // Malformed: keep what was read.
  }
  return names
}

/**
 * Where the code section starts (the offset of its id byte), or `undefined` without one. The
 * host rewrites sections before it (memory limits, exports), so a byte offset V8 reports in the
 * compiled module is the same offset in the guest's own file shifted by the difference.
 */
export function codeSectionStart(bytes: Uint8Array): number | undefined {
  const r = new Reader(bytes, 8, bytes.length, DEFAULT_MODULE_NAME)
  try {
    while (r.remaining > 0) {
      const start = r.pos
      const id = r.u8('section id')
      const size = r.u32('section size')
      if (id === SECTION_CODE) return start
      r.skip(size, 'section')
    }
  } catch {
    // Only ever called on bytes that parsed already.
  }
  return undefined
}

/**
 * Last line of defence for the one-error-type promise: the decoder is written to fail only via
 * `invalidModule`, but if a bug lets a RangeError or TypeError escape on hostile input, callers
 * still get `ERR_WASM_INVALID_MODULE` (with the original as `cause`) instead of a crash path
 * they were never told to expect.
 */
function guard<T>(moduleName: string, fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (err instanceof WasmSandboxError) throw err
    throw errors.invalidModule(moduleName, `could not decode the module (${(err as Error)?.message ?? String(err)})`, err)
  }
}
