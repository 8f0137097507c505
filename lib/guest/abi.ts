import { errors } from '../errors.js'
import type { ExternKind, FuncType, MemoryLimits, ModuleInfo } from './binary.js'

/** What the host needs to know about a guest that passed ABI v1 validation. */
export interface GuestAbi {
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
}

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

/** Checks imports and exports against the guest ABI v1 (docs/abi.md), naming every mismatch. */
export function validateAbi(info: ModuleInfo, name: string): GuestAbi {
  const refused: string[] = []
  let importedMemory: MemoryLimits | undefined
  for (const imp of info.imports) {
    const key = `${imp.module}.${imp.name}`
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
  return { hasInit: exports.has('init'), hasFlush: exports.has('flush'), importedMemory }
}

/**
 * The weaker check available for a precompiled `WebAssembly.Module`: names and kinds only,
 * since V8 does not expose function signatures.
 */
export function validateCompiledAbi(module: WebAssembly.Module, name: string): GuestAbi {
  const refused = WebAssembly.Module.imports(module)
    .filter((i) => !(i.module === 'sandbox' && (i.name === 'emit' || i.name === 'fail') && i.kind === 'function'))
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
    hasInit: exports.has('init'),
    hasFlush: exports.has('flush'),
    importedMemory: importsMemory ? { initial: 0, maximum: undefined, shared: false, memory64: false } : undefined,
  }
}
