/**
 * A valid ABI v1 guest of any size, made of many small functions, as big real-world modules are
 * (a compiler or a language runtime built to wasm): `process_chunk` emits its input unchanged,
 * and the filler functions are never called but must be parsed, validated and compiled like any
 * other. Written directly into one buffer, so 100 MB takes a few tens of milliseconds.
 */

import { encodeName, encodeU32 } from '../../lib/guest/binary.js'

const MAGIC = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]

const uleb = encodeU32
const name = encodeName
const section = (id: number, payload: number[]): number[] => [id, ...uleb(payload.length), ...payload]
const I32 = 0x7f

export interface BigModuleOptions {
  /** Total size wanted, in bytes (the result is within a function's size of it). */
  bytes: number
  /** Bytes of each filler function's body; defaults to 1000 (100 MB is then 100,000 functions). */
  functionBytes?: number
}

/** The module's bytes, and how many functions it has. */
export function bigModule(options: BigModuleOptions): { bytes: Buffer; functions: number } {
  // Each filler is `(func (param i32) (result i32) local.get 0, then (i32.const 7 i32.add) × k)`.
  const step = [0x41, 0x07, 0x6a]
  const k = Math.max(1, Math.floor(((options.functionBytes ?? 1000) - 4) / step.length))
  const body = Buffer.from([0x00, 0x20, 0x00, ...Array.from({ length: k }, () => step).flat(), 0x0b])
  const entry = Buffer.concat([Buffer.from(uleb(body.length)), body])
  const fillers = Math.max(1, Math.floor(options.bytes / entry.length))
  const functions = fillers + 2

  // Types: 0 (i32 i32) -> (), 1 (i32) -> i32, 2 (i32 i32) -> i32.
  const types = section(1, [3, 0x60, 2, I32, I32, 0, 0x60, 1, I32, 1, I32, 0x60, 2, I32, I32, 1, I32])
  const imports = section(2, [1, ...name('sandbox'), ...name('emit'), 0x00, 0])
  // Function 1 (after the import) is alloc, 2 process_chunk, then the fillers.
  const funcs = Buffer.alloc(uleb(functions).length + functions, 1)
  funcs.set(uleb(functions))
  funcs[uleb(functions).length + 1] = 2
  const funcSection = Buffer.from([0x03, ...uleb(funcs.length), ...funcs])
  // Three pages: alloc's region at 1024 holds a 64 KiB chunk.
  const memory = section(5, [1, 0x00, 3])
  const exports = section(7, [3, ...name('memory'), 0x02, 0, ...name('alloc'), 0x00, 1, ...name('process_chunk'), 0x00, 2])
  const alloc = [0x00, 0x41, ...[0x80, 0x08], 0x0b] // i32.const 1024
  const processChunk = [0x00, 0x20, 0x00, 0x20, 0x01, 0x10, 0x00, 0x41, 0x00, 0x0b] // emit(ptr, len); 0
  const head = [...uleb(functions), ...uleb(alloc.length), ...alloc, ...uleb(processChunk.length), ...processChunk]
  const codeLength = head.length + fillers * entry.length

  const prefix = Buffer.from([...MAGIC, ...types, ...imports, ...funcSection, ...memory, ...exports, 0x0a, ...uleb(codeLength), ...head])
  const bytes = Buffer.allocUnsafe(prefix.length + fillers * entry.length)
  prefix.copy(bytes)
  let at = prefix.length
  for (let i = 0; i < fillers; i++, at += entry.length) entry.copy(bytes, at)
  return { bytes, functions }
}
