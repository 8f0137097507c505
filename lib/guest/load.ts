import '../wasm-globals.js'
import { createHash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { errors } from '../errors.js'
import { logger } from '../log.js'
import { validateAbi, validateCompiledAbi, type GuestAbi } from './abi.js'
import { codeSectionStart, exportMutableGlobals, limitMemory, parseModule, PAGE_SIZE, type ValType } from './binary.js'
import { hookMemoryGrow } from './grow-hook.js'

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
}

const CACHE_SIZE = 32
const cache = new Map<string, Promise<LoadedGuest>>()

function nameOf(source: ModuleSource): string {
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

async function fetchModule(url: URL, maxSize: number): Promise<Uint8Array> {
  const response = await fetch(url, { signal: AbortSignal.timeout(FETCH_LIMITS.timeoutMs) })
  if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`)
  // Refused on the announced size when there is one, else as the bytes pass the limit.
  const declared = Number(response.headers.get('content-length') ?? NaN)
  if (declared > maxSize) {
    await response.body?.cancel()
    return tooLarge(declared)
  }
  const parts: Uint8Array[] = []
  let total = 0
  for await (const part of response.body ?? []) {
    total += (part as Uint8Array).length
    if (total > maxSize) {
      await response.body?.cancel().catch(() => {})
      return tooLarge(total)
    }
    parts.push(part as Uint8Array)
  }
  return Buffer.concat(parts, total)
}

async function readSource(source: string | URL, name: string, maxSize: number): Promise<Uint8Array> {
  let path: string | undefined
  try {
    if (typeof source === 'string' && URL_STRING.test(source)) source = new URL(source)
    if (typeof source === 'string') path = source
    else if (source.protocol === 'file:') path = fileURLToPath(source)
    else return await fetchModule(source, maxSize)
    // A file's size is known before it is read: a huge one costs the host nothing.
    const { size } = await stat(path)
    if (size > maxSize) return tooLarge(size)
    return await readFile(path)
  } catch (err) {
    if (err instanceof TooLarge) throw errors.moduleTooLarge(name, err.size, maxSize)
    throw errors.moduleNotFound(name, err)
  }
}

class TooLarge extends Error {
  constructor(readonly size: number) {
    super(`${size} bytes`)
  }
}

function tooLarge(size: number): never {
  throw new TooLarge(size)
}

async function compile(bytes: Uint8Array, name: string, options: LoadOptions, hash: string): Promise<LoadedGuest> {
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
    return { name, module, abi, hash, memoryLimit, globals, stateless: declaresStateless(module), functionExports, codeOffsets, growHook }
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

/**
 * Reads, validates and compiles a guest. Compiled modules are cached by content hash and
 * limit, so many streams over the same guest compile it once.
 */
export async function loadGuest(source: ModuleSource, options: LoadOptions = {}): Promise<LoadedGuest> {
  const name = nameOf(source)
  if (source instanceof WebAssembly.Module) {
    const abi = validateCompiledAbi(source, name)
    return { name, module: source, abi, hash: undefined, memoryLimit: undefined, globals: undefined, stateless: declaresStateless(source) }
  }
  const maxSize = options.maxModuleSize ?? Infinity
  let bytes: Uint8Array
  if (typeof source === 'string' || source instanceof URL) bytes = await readSource(source, name, maxSize)
  else if (source instanceof ArrayBuffer) bytes = new Uint8Array(source)
  else if (source instanceof Uint8Array) bytes = source
  else throw errors.invalidOption('module must be a file path, URL, Buffer/Uint8Array, ArrayBuffer or WebAssembly.Module')
  if (bytes.length > maxSize) throw errors.moduleTooLarge(name, bytes.length, maxSize)

  const hash = createHash('sha256').update(bytes).digest('hex')
  const key = `${hash}:${options.memoryLimit ?? ''}`
  let pending = cache.get(key)
  if (!pending) {
    // Copy, so a caller mutating its buffer later cannot change what was validated.
    pending = compile(Uint8Array.prototype.slice.call(bytes), name, options, hash)
    cache.set(key, pending)
    if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!)
    pending.catch(() => cache.delete(key))
  }
  const loaded = await pending
  return loaded.name === name ? loaded : { ...loaded, name }
}

export function isLoadedGuest(value: unknown): value is LoadedGuest {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as LoadedGuest).module instanceof WebAssembly.Module &&
    typeof (value as LoadedGuest).abi === 'object'
  )
}
