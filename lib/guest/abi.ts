import '../wasm-globals.js'
import { errors } from '../errors.js'
import type { ExternKind, FuncType, MemoryLimits, ModuleInfo } from './binary.js'
import { WASI_MODULE, WASI_PREVIEW1_FUNCTIONS } from '../wasi/preview1.js'

/**
 * How the host drives a guest: `'abi-v1'` a chunk at a time through `process_chunk` (a WASI
 * reactor built with wasi-libc is one too, with `wasiImports` set); `'wasi-command'` a program
 * whose `_start` reads standard input and writes standard output.
 */
export type GuestKind = 'abi-v1' | 'wasi-command'

/** What the host needs to know about a guest that passed validation. */
export interface GuestAbi {
  kind: GuestKind
  /** The `wasi_snapshot_preview1` functions the guest imports (empty for a pure ABI v1 guest). */
  wasiImports: readonly string[]
  /** A WASI reactor's `_initialize`, run before `init`. */
  hasInitialize: boolean
  hasInit: boolean
  hasFlush: boolean
  /** Set when the guest imports `env.memory` instead of exporting `memory`. */
  importedMemory: MemoryLimits | undefined
}

const I32 = 'i32'
const EXPECTED_EXPORTS: Record<string, FuncType> = {
  alloc: { params: [I32], results: [I32] },
  process_chunk: { params: [I32, I32], results: [I32] },
  init: { params: [], results: [I32] },
  flush: { params: [], results: [I32] },
}
const EXPECTED_IMPORTS: Record<string, FuncType> = {
  'sandbox.emit': { params: [I32, I32], results: [] },
  'sandbox.fail': { params: [I32, I32], results: [] },
  // ABI v1.1 (docs/abi.md#abi-v11): optional, so every v1 guest is a v1.1 guest.
  'sandbox.config_size': { params: [], results: [I32] },
  'sandbox.config_read': { params: [I32, I32], results: [I32] },
  'sandbox.log': { params: [I32, I32, I32], results: [] },
}
const SANDBOX_FUNCTIONS = new Set(Object.keys(EXPECTED_IMPORTS).map((key) => key.slice('sandbox.'.length)))

function describe(kind: ExternKind, type: FuncType | undefined): string {
  if (kind !== 'function' || !type) return `a ${kind}`
  return `a function (${type.params.join(', ')}) -> (${type.results.join(', ')})`
}

function sameType(a: FuncType | undefined, b: FuncType): boolean {
  return (
    a !== undefined &&
    a.params.length === b.params.length &&
    a.results.length === b.results.length &&
    a.params.every((p, i) => p === b.params[i]) &&
    a.results.every((r, i) => r === b.results[i])
  )
}

/**
 * Sorts a WASI module: a command (`_start`, no `process_chunk`) or a reactor that is an ABI v1
 * guest. Anything else importing WASI is refused, saying which of the two it failed to be.
 */
function wasiKind(name: string, exports: ReadonlyMap<string, { kind: ExternKind }>, wasiImports: readonly string[]): GuestKind {
  const unknown = wasiImports.filter((f) => !WASI_PREVIEW1_FUNCTIONS.has(f))
  if (unknown.length > 0) throw errors.unknownImport(name, unknown.map((f) => `${WASI_MODULE}.${f}`))
  if (exports.get('_start')?.kind === 'function' && !exports.has('process_chunk')) return 'wasi-command'
  if (exports.has('process_chunk') || wasiImports.length === 0) return 'abi-v1'
  throw errors.missingExports(name, ['_start (a WASI command) or alloc and process_chunk (an ABI v1 guest built as a WASI reactor)'])
}

/** Checks imports and exports against the guest ABI v1 (docs/abi.md) or WASI, naming every mismatch. */
export function validateAbi(info: ModuleInfo, name: string): GuestAbi {
  const refused: string[] = []
  const wasiImports: string[] = []
  let importedMemory: MemoryLimits | undefined
  for (const imp of info.imports) {
    const key = `${imp.module}.${imp.name}`
    if (imp.module === WASI_MODULE && imp.kind === 'function') {
      wasiImports.push(imp.name)
      continue
    }
    if (key === 'env.memory' && imp.kind === 'memory') {
      importedMemory = imp.memory
      continue
    }
    const expected = EXPECTED_IMPORTS[key]
    if (expected && imp.kind === 'function' && sameType(imp.funcType, expected)) continue
    refused.push(expected ? `${key} as ${describe(imp.kind, imp.funcType)}` : key)
  }
  if (refused.length > 0) throw errors.unknownImport(name, refused)

  const exports = new Map(info.exports.map((e) => [e.name, e]))
  const kind = wasiKind(name, exports, wasiImports)
  if (kind === 'wasi-command') {
    const memory = exports.get('memory')
    if (!memory || memory.kind !== 'memory') throw errors.missingExports(name, ['memory'])
    return { kind, wasiImports, hasInitialize: false, hasInit: false, hasFlush: false, importedMemory: undefined }
  }
  const missing = ['alloc', 'process_chunk'].filter((n) => !exports.has(n))
  if (!importedMemory && !exports.has('memory')) missing.unshift('memory')
  if (missing.length > 0) throw errors.missingExports(name, missing)

  const memory = exports.get('memory')
  if (memory && memory.kind !== 'memory') throw errors.badExport(name, 'memory', 'a memory', describe(memory.kind, memory.funcType))
  for (const [exportName, type] of Object.entries(EXPECTED_EXPORTS)) {
    const entry = exports.get(exportName)
    if (!entry) continue
    if (entry.kind !== 'function' || !sameType(entry.funcType, type)) {
      throw errors.badExport(name, exportName, describe('function', type), describe(entry.kind, entry.funcType))
    }
  }
  return {
    kind,
    wasiImports,
    hasInitialize: exports.get('_initialize')?.kind === 'function',
    hasInit: exports.has('init'),
    hasFlush: exports.has('flush'),
    importedMemory,
  }
}

/**
 * The weaker check available for a precompiled `WebAssembly.Module`: names and kinds only,
 * since V8 does not expose function signatures.
 */
export function validateCompiledAbi(module: WebAssembly.Module, name: string): GuestAbi {
  const wasiImports = WebAssembly.Module.imports(module)
    .filter((i) => i.module === WASI_MODULE && i.kind === 'function')
    .map((i) => i.name)
  const exportKinds = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, { kind: e.kind as ExternKind }]))
  const kind = wasiKind(name, exportKinds, wasiImports)
  if (kind === 'wasi-command') {
    if (exportKinds.get('memory')?.kind !== 'memory') throw errors.missingExports(name, ['memory'])
    return { kind, wasiImports, hasInitialize: false, hasInit: false, hasFlush: false, importedMemory: undefined }
  }
  const refused = WebAssembly.Module.imports(module)
    .filter((i) => !(i.module === WASI_MODULE && i.kind === 'function'))
    .filter((i) => !(i.module === 'sandbox' && SANDBOX_FUNCTIONS.has(i.name) && i.kind === 'function'))
    .filter((i) => !(i.module === 'env' && i.name === 'memory' && i.kind === 'memory'))
    .map((i) => `${i.module}.${i.name}`)
  if (refused.length > 0) throw errors.unknownImport(name, refused)
  const importsMemory = WebAssembly.Module.imports(module).some((i) => i.kind === 'memory')
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]))
  const missing = ['alloc', 'process_chunk'].filter((n) => !exports.has(n))
  if (!importsMemory && !exports.has('memory')) missing.unshift('memory')
  if (missing.length > 0) throw errors.missingExports(name, missing)
  for (const fn of ['alloc', 'process_chunk', 'init', 'flush']) {
    const kind = exports.get(fn)
    if (kind !== undefined && kind !== 'function') throw errors.badExport(name, fn, 'a function', `a ${kind}`)
  }
  if (exports.has('memory') && exports.get('memory') !== 'memory') {
    throw errors.badExport(name, 'memory', 'a memory', `a ${exports.get('memory')}`)
  }
  return {
    kind,
    wasiImports,
    hasInitialize: exports.get('_initialize') === 'function',
    hasInit: exports.has('init'),
    hasFlush: exports.has('flush'),
    importedMemory: importsMemory ? { initial: 0, maximum: undefined, shared: false, memory64: false } : undefined,
  }
}
