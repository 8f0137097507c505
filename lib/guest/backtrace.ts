/**
 * A trapped guest's call stack, read from the error V8 threw. V8 formats a wasm frame as
 * `at name (wasm://wasm/1a2b3c4d:wasm-function[7]:0x1f3)` (`name` only when the module has a
 * `name` section) and records as many frames as `Error.stackTraceLimit` (10 by default, host
 * frames included). Only the function index and the byte offset are taken from it: the name
 * comes from the module's own `name` section, read here, or else from its exports. The offset
 * is in the compiled module, which the load-time rewrites changed: it is mapped back to the
 * guest's own file (`LoadedGuest.codeOffsets`).
 */
import type { WasmFrame } from '../errors.js'
import { readFunctionNames } from './binary.js'
import { originalOffset } from './grow-hook.js'
import type { LoadedGuest } from './load.js'

const WASM_FRAME = /wasm-function\[(\d+)\]:0x([0-9a-f]+)/

/** Names per compiled module, read at the first trap: a guest that traps on every record pays once. */
const namesByModule = new WeakMap<WebAssembly.Module, Map<number, string>>()

function functionNames(guest: LoadedGuest): Map<number, string> {
  let names = namesByModule.get(guest.module)
  if (!names) {
    const section = WebAssembly.Module.customSections(guest.module, 'name')[0]
    names = section ? readFunctionNames(new Uint8Array(section)) : new Map()
    for (const [name, index] of guest.functionExports ?? []) if (!names.has(index)) names.set(index, name)
    namesByModule.set(guest.module, names)
  }
  return names
}

/** The wasm frames of `err`'s stack, innermost first; empty when it has none (not a trap). */
export function wasmBacktrace(err: unknown, guest: LoadedGuest): WasmFrame[] {
  const stack = err instanceof Error ? err.stack : undefined
  if (typeof stack !== 'string') return []
  const frames: WasmFrame[] = []
  for (const line of stack.split('\n')) {
    const m = WASM_FRAME.exec(line)
    if (!m) continue
    const func = Number(m[1])
    // The grow hook is the host's, not in the guest's file: its caller's frame, next, is
    // where the guest's memory.grow was.
    if (guest.growHook && func >= guest.growHook.firstHook) continue
    const offset = parseInt(m[2]!, 16)
    frames.push({ func, name: undefined, offset: guest.codeOffsets ? originalOffset(guest.codeOffsets, offset) : offset })
  }
  if (frames.length === 0) return frames
  const names = functionNames(guest)
  for (const f of frames) f.name = names.get(f.func)
  return frames
}
