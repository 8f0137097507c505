import '../wasm-globals.js'
import { createHash } from 'node:crypto'
import { open, readFile, stat, type FileHandle } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { errors } from '../errors.js'
import { logger } from '../log.js'
import { validateAbi, validateCompiledAbi, type GuestAbi } from './abi.js'
import { codeSectionStart, exportMutableGlobals, importMemory, limitMemory, parseModule, PAGE_SIZE, type MemoryLimits, type ValType } from './binary.js'
import { hookMemoryGrow } from './grow-hook.js'
import { HOST_MEMORY } from '../wasi/preview1.js'

const log = logger('loader')

/** Anything a guest can be given as. */
export type ModuleSource = string | URL | Uint8Array | ArrayBuffer | WebAssembly.Module

/** A guest compiled once, validated against the ABI, ready to be instantiated many times. */
export interface LoadedGuest {
  /** For messages: the path, URL, or `<buffer>` / `<module>`. */
  readonly name: string
  readonly module: WebAssembly.Module
  readonly abi: GuestAbi
  /** sha256 of the bytes as given (before any rewrite); `undefined` for a precompiled module. */
  readonly hash: string | undefined
  /** The memory cap, in bytes, the compiled module enforces itself (rewritten maximum). */
  readonly memoryLimit: number | undefined
  /**
   * Every mutable global, exported (under a reserved name if the guest did not export it) so
   * the host can capture and restore guest state without the guest's help. `undefined` for a
   * precompiled module, which cannot be rewritten and so cannot be checkpointed.
   */
  readonly globals: readonly GuestGlobal[] | undefined
  /**
   * `[name, function index]` of each exported function: names for a trap's backtrace when the
   * module has no `name` section. `undefined` for a precompiled module (V8 does not give indices).
   */
  readonly functionExports?: readonly (readonly [string, number])[] | undefined
  /**
   * Where the rewrites moved the code: pairs `[compiled offset, shift]`, ascending; a byte at a
   * compiled offset `o` is at `o - shift` in the guest's own file, the shift being that of the
   * last pair at or before `o` (`originalOffset` in grow-hook.ts). `undefined` when nothing moved.
   */
  readonly codeOffsets?: readonly number[] | undefined
  /**
   * Set when every `memory.grow` was rewritten to record a refusal (grow-hook.ts): the export
   * name of the record global, and the index of the first added function (the hooks).
   */
  readonly growHook?: { readonly record: string; readonly firstHook: number } | undefined
  /** The guest declares that it keeps no state between chunks (a `wasm-sandbox.stateless` custom section). */
  readonly stateless: boolean
  /**
   * A WASI command's memory, moved by the rewrite to an import (`HOST_MEMORY`) that the host fills
   * with a memory of these limits, so runs once per record can reuse one memory, zeroed, instead
   * of making and collecting one per record.
   */
  readonly hostMemory?: MemoryLimits | undefined
}

/** The custom section by which a guest declares itself stateless (docs/abi.md). */
export const STATELESS_SECTION = 'wasm-sandbox.stateless'

function declaresStateless(module: WebAssembly.Module): boolean {
  return WebAssembly.Module.customSections(module, STATELESS_SECTION).length > 0
}

export interface GuestGlobal {
  exportName: string
  valType: ValType
}

export interface LoadOptions {
  /** Cap on linear memory in bytes; the module's declared maximum is lowered to it. */
  memoryLimit?: number
  /** Bytes the module may have: a larger one is refused before it is read, hashed or parsed. */
  maxModuleSize?: number
  /**
   * Milliseconds the loader thread may spend on a module (reading, hashing, parsing, rewriting,
   * compiling); past it the thread is ended and the load fails with `ERR_WASM_TIMEOUT`.
   */
  loadTimeout?: number
}

export function nameOf(source: ModuleSource): string {
  if (typeof source === 'string') return source
  if (source instanceof URL) return source.href
  if (source instanceof WebAssembly.Module) return '<module>'
  return '<buffer>'
}

/**
 * A string that starts with `http:`, `https:` or `file:` is that URL, as in `fetch()` or
 * `import()`, not a relative path: `'https://host/x.wasm'` is fetched and `'file:///x.wasm'` read.
 * Any other string is a file path (a Windows `C:\...` path included).
 */
const URL_STRING = /^(?:https?|file):/i

/**
 * How long a module fetch may take: a server that never answers must not hang the load. (Its
 * size is bounded by `limits.moduleSize`, as a file's is.) An object, so tests can lower it.
 */
export const FETCH_LIMITS = { timeoutMs: 30_000 }

/**
 * A module's bytes as far as the host has them, before any work is done on them: in one piece
 * (`owned` when nobody else holds them), in the pieces a fetch gave, or still in a file, which
 * the loader thread then reads itself.
 */
export type ModuleBytes =
  | { kind: 'bytes'; bytes: Uint8Array; owned: boolean }
  | { kind: 'parts'; parts: Uint8Array[]; size: number }
  | { kind: 'file'; path: string; size: number }

/** The bytes a caller gave, refused if over `maxSize`; anything else is not a module source. */
export function givenBytes(source: unknown, name: string, maxSize: number): ModuleBytes & { kind: 'bytes' } {
  let bytes: Uint8Array
  if (source instanceof ArrayBuffer) bytes = new Uint8Array(source)
  else if (source instanceof Uint8Array) bytes = source
  else throw errors.invalidOption('module must be a file path, URL, Buffer/Uint8Array, ArrayBuffer or WebAssembly.Module')
  if (bytes.length > maxSize) throw errors.moduleTooLarge(name, bytes.length, maxSize)
  return { kind: 'bytes', bytes, owned: false }
}

async function fetchModule(url: URL, maxSize: number): Promise<{ parts: Uint8Array[]; size: number }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(FETCH_LIMITS.timeoutMs) })
  if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`)
  // Refused on the announced size when there is one, else as the bytes pass the limit.
  const declared = Number(response.headers.get('content-length') ?? NaN)
  if (declared > maxSize) {
    await response.body?.cancel()
    return tooLarge(declared)
  }
  const parts: Uint8Array[] = []
  let size = 0
  for await (const part of response.body ?? []) {
    size += (part as Uint8Array).length
    if (size > maxSize) {
      await response.body?.cancel().catch(() => {})
      return tooLarge(size)
    }
    parts.push(part as Uint8Array)
  }
  return { parts, size }
}

/**
 * The file a module source names, as `locateModule` reads it: a path or a `file:` URL (string or
 * URL); undefined for an http(s) URL, bytes, a compiled module, or a malformed URL (which loading
 * then reports). For comparing a module with an output file.
 */
export function modulePath(source: unknown): string | undefined {
  if (typeof source === 'string' && !URL_STRING.test(source)) return source
  try {
    const url = typeof source === 'string' ? new URL(source) : source
    return url instanceof URL && url.protocol === 'file:' ? fileURLToPath(url) : undefined
  } catch {
    return undefined
  }
}

/**
 * Finds the bytes of a module file or URL, refusing one over `maxSize` before anything is done
 * with it. One of at most `readBelow` bytes is read into memory; a larger file is only measured,
 * and a larger fetch kept in its pieces, so no large copy is made here.
 */
export async function locateModule(source: string | URL, name: string, maxSize: number, readBelow: number): Promise<ModuleBytes> {
  let path: string | undefined
  try {
    if (typeof source === 'string' && URL_STRING.test(source)) source = new URL(source)
    if (typeof source === 'string') path = source
    else if (source.protocol === 'file:') path = fileURLToPath(source)
    else {
      const { parts, size } = await fetchModule(source, maxSize)
      return size <= readBelow ? { kind: 'bytes', bytes: Buffer.concat(parts, size), owned: true } : { kind: 'parts', parts, size }
    }
    // A file's size is known before it is read: a huge one costs the host nothing.
    const { size } = await stat(path)
    if (size > maxSize) return tooLarge(size)
    if (size > readBelow) return { kind: 'file', path, size }
    const bytes = await readFile(path)
    // It may have grown since.
    if (bytes.length > maxSize) return tooLarge(bytes.length)
    return { kind: 'bytes', bytes, owned: true }
  } catch (err) {
    if (err instanceof TooLarge) throw errors.moduleTooLarge(name, err.size, maxSize)
    throw errors.moduleNotFound(name, err)
  }
}

/**
 * Reads a module file that `locateModule` measured, in the loader thread. The size is checked
 * again on the open file: it may have been replaced since.
 */
export async function readModuleFile(path: string, name: string, maxSize: number): Promise<Uint8Array> {
  let file: FileHandle | undefined
  try {
    file = await open(path, 'r')
    const { size } = await file.stat()
    if (size > maxSize) return tooLarge(size)
    const bytes = await file.readFile()
    if (bytes.length > maxSize) return tooLarge(bytes.length)
    return bytes
  } catch (err) {
    if (err instanceof TooLarge) throw errors.moduleTooLarge(name, err.size, maxSize)
    throw errors.moduleNotFound(name, err)
  } finally {
    await file?.close()
  }
}

/** The content hash guests are cached and checkpoints matched by. */
export function hashOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

class TooLarge extends Error {
  constructor(readonly size: number) {
    super(`${size} bytes`)
  }
}

function tooLarge(size: number): never {
  throw new TooLarge(size)
}

/**
 * The work done on a module's bytes, start to end: parse, check against the ABI, rewrite, compile.
 * Pure (bytes in, guest out), so it runs the same on the main thread and in the loader thread.
 */
export async function compile(bytes: Uint8Array, name: string, options: LoadOptions, hash: string): Promise<LoadedGuest> {
  const info = parseModule(bytes, name)
  const codeStart = codeSectionStart(bytes)
  const functionExports = info.exports.filter((e) => e.kind === 'function').map((e) => [e.name, e.index] as const)
  let abi = validateAbi(info, name)
  let memoryLimit: number | undefined
  if (options.memoryLimit !== undefined) {
    const maxPages = Math.floor(options.memoryLimit / PAGE_SIZE)
    bytes = limitMemory(bytes, maxPages, name)
    memoryLimit = maxPages * PAGE_SIZE
    const imported = abi.importedMemory
    // The host creates an imported memory: with the rewritten maximum, or it would not link.
    if (imported) abi = { ...abi, importedMemory: { ...imported, maximum: Math.min(imported.maximum ?? maxPages, maxPages) } }
  }
  let hostMemory: MemoryLimits | undefined
  if (abi.kind === 'wasi-command') {
    // Per-record runs made and collected a memory per record: two thirds of a worker's time.
    const moved = importMemory(bytes, HOST_MEMORY.module, HOST_MEMORY.field, name)
    if (moved) {
      bytes = moved.bytes
      hostMemory = moved.limits
    }
  }
  // Before the grow hook, so the checkpointed globals are the guest's own and not the record.
  const exported = exportMutableGlobals(bytes, undefined, name)
  bytes = exported.bytes
  const globals = exported.globals.map(({ exportName, valType }) => ({ exportName, valType }))
  const codeShift = codeStart === undefined ? 0 : (codeSectionStart(bytes) ?? codeStart) - codeStart
  let codeOffsets: number[] | undefined = codeShift === 0 ? undefined : [0, codeShift]
  let growHook: LoadedGuest['growHook']
  let unhooked: Uint8Array | undefined
  if (memoryLimit !== undefined) {
    // A refusal can only be the limit's doing once there is one; without, nothing to explain.
    const hooked = hookMemoryGrow(bytes, name)
    if (hooked.kind === 'hooked') {
      unhooked = bytes
      bytes = hooked.bytes
      growHook = { record: hooked.record, firstHook: hooked.firstHook }
      codeOffsets = hooked.offsets.map((v, i) => (i % 2 === 1 ? v + codeShift : v))
    } else if (hooked.kind === 'skipped') {
      log('%s: memory.grow left as it is (%s); a refused grow is inferred from the memory size', name, hooked.reason)
    }
  }
  const done = (module: WebAssembly.Module): LoadedGuest => {
    log('compiled %s (%d bytes, sha256 %s)', name, bytes.length, hash.slice(0, 12))
    return { name, module, abi, hash, memoryLimit, globals, stateless: declaresStateless(module), functionExports, codeOffsets, growHook, hostMemory }
  }
  try {
    return done(await WebAssembly.compile(bytes))
  } catch (err) {
    if (unhooked === undefined) throw errors.invalidModule(name, (err as Error).message, err)
  }
  // The engine refused the hooked module. Never seen, but the hook must not be what rejects a
  // guest: compile it as it was, and report its own error if it has one.
  log('%s: the module with memory.grow hooked did not compile; compiling it as it was', name)
  bytes = unhooked
  growHook = undefined
  codeOffsets = codeShift === 0 ? undefined : [0, codeShift]
  try {
    return done(await WebAssembly.compile(bytes))
  } catch (err) {
    throw errors.invalidModule(name, (err as Error).message, err)
  }
}

/** A precompiled module: checked against the ABI, but neither hashed nor rewritten. */
export function precompiledGuest(module: WebAssembly.Module, name: string): LoadedGuest {
  const abi = validateCompiledAbi(module, name)
  return { name, module, abi, hash: undefined, memoryLimit: undefined, globals: undefined, stateless: declaresStateless(module) }
}

export function isLoadedGuest(value: unknown): value is LoadedGuest {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as LoadedGuest).module instanceof WebAssembly.Module &&
    typeof (value as LoadedGuest).abi === 'object'
  )
}
