import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import wabtInit from 'wabt'
import * as binary from '../lib/guest/binary.js'
import { WasmSandboxError } from '../lib/errors.js'

const wabt = await wabtInit()

/*
 * The compiler options use lib ES2022 without DOM, so there are no global WebAssembly types;
 * this is the slice of the JS API the tests use, typed locally so the file compiles on its own.
 */
interface WasmGlobal {
  value: unknown
}
interface WasmMemory {
  grow(delta: number): number
  readonly buffer: ArrayBuffer | SharedArrayBuffer
}
interface WasmModule {
  readonly __brand?: 'WasmModule'
}
interface WasmDescriptor {
  name: string
  kind: string
}
interface WasmApi {
  Module: {
    new (bytes: Uint8Array): WasmModule
    exports(m: WasmModule): WasmDescriptor[]
    imports(m: WasmModule): (WasmDescriptor & { module: string })[]
    customSections(m: WasmModule, name: string): ArrayBuffer[]
  }
  Instance: new (m: WasmModule, imports?: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> }
  Memory: new (d: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory
  Global: new (d: { value: string; mutable?: boolean }, v?: unknown) => WasmGlobal
  LinkError: new (message?: string) => Error
  validate(bytes: Uint8Array): boolean
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly

type Features = Parameters<typeof wabt.parseWat>[2]

/**
 * Compiles WAT to bytes. wabt.js validates with default features only (it rejects shared
 * memory and extended-const even when enabled), so modules needing features are left to the
 * engine or, for ones Node 20 lacks, only parsed.
 */
function wat(text: string, features?: Features): Uint8Array {
  const m = wabt.parseWat('test.wat', text, features)
  try {
    m.resolveNames()
    if (features === undefined) m.validate()
    return Uint8Array.from(m.toBinary({}).buffer)
  } finally {
    m.destroy()
  }
}

function uleb(n: number): number[] {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n !== 0) b |= 0x80
    out.push(b)
  } while (n !== 0)
  return out
}

function str(s: string): number[] {
  const b = new TextEncoder().encode(s)
  return [...uleb(b.length), ...b]
}

/** Hand-assembles a module from [sectionId, payload] pairs, for layouts wabt will not emit. */
function mod(...sections: [number, number[]][]): Uint8Array {
  const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]
  for (const [id, payload] of sections) out.push(id, ...uleb(payload.length), ...payload)
  return Uint8Array.from(out)
}

/** A section whose size field is given verbatim, to test broken size encodings. */
function rawModule(bytes: number[]): Uint8Array {
  return Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...bytes])
}

function isSandboxError(err: unknown, code: string): boolean {
  return err instanceof WasmSandboxError && err.name === 'WasmSandboxError' && err.code === code
}

function assertInvalid(fn: () => unknown, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isSandboxError(err, 'ERR_WASM_INVALID_MODULE'), `expected ERR_WASM_INVALID_MODULE, got ${String(err)}`)
    if (message) assert.match((err as Error).message, message)
    // The guard's wording means a raw exception escaped the decoder: that is a bug even though it is caught.
    assert.doesNotMatch((err as Error).message, /could not decode the module/)
    return true
  })
}

/** Either succeeds or throws one of the allowed sandbox errors, never anything else. */
function assertSafe(fn: () => unknown, allowed: string[] = ['ERR_WASM_INVALID_MODULE']): boolean {
  try {
    fn()
    return true
  } catch (err) {
    assert.ok(
      allowed.some((code) => isSandboxError(err, code)),
      `unexpected error: ${err instanceof Error ? err.stack : String(err)}`,
    )
    assert.doesNotMatch((err as Error).message, /could not decode the module/)
    return false
  }
}

const FULL = wat(`
  (module
    (import "sandbox" "emit" (func $emit (param i32 i32)))
    (import "sandbox" "fail" (func $fail (param i32 i32) (result i32)))
    (import "env" "g" (global $gi (mut i32)))
    (import "env" "k" (global $gk i64))
    (memory (export "memory") 2 16)
    (global $sp (mut i32) (i32.const 1024))
    (global $c f64 (f64.const 1.5))
    (global $v (mut i64) (i64.const -1))
    (func $start)
    (func (export "process_chunk") (param i32 i32) (result i32) (i32.const 0))
    (func (export "alloc") (param i32) (result i32) (global.get $sp))
    (func (export "get_v") (result i64) (global.get $v))
    (export "sp" (global $sp))
    (export "c" (global $c))
    (start $start)
    (data (i32.const 0) "hi"))
`)

function fullImports(): Record<string, Record<string, unknown>> {
  return {
    sandbox: { emit: () => {}, fail: () => 0 },
    env: {
      g: new WA.Global({ value: 'i32', mutable: true }, 7),
      k: new WA.Global({ value: 'i64', mutable: false }, 5n),
    },
  }
}

const GROW = wat(`
  (module
    (memory (export "memory") 1)
    (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
    (func (export "size") (result i32) (memory.size)))
`)

const IMPORTED_MEMORY = wat(`
  (module
    (import "env" "memory" (memory 1))
    (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))
`)

describe('parseModule', () => {
  test('reports imports, exports, memories, globals and start', () => {
    const info = binary.parseModule(FULL)
    assert.deepEqual(info.imports, [
      { module: 'sandbox', name: 'emit', kind: 'function', funcType: { params: ['i32', 'i32'], results: [] } },
      { module: 'sandbox', name: 'fail', kind: 'function', funcType: { params: ['i32', 'i32'], results: ['i32'] } },
      { module: 'env', name: 'g', kind: 'global' },
      { module: 'env', name: 'k', kind: 'global' },
    ])
    assert.deepEqual(info.memories, [{ initial: 2, maximum: 16, shared: false, memory64: false }])
    assert.deepEqual(info.globals, [
      { index: 0, valType: 'i32', mutable: true, imported: true, exportNames: [] },
      { index: 1, valType: 'i64', mutable: false, imported: true, exportNames: [] },
      { index: 2, valType: 'i32', mutable: true, imported: false, exportNames: ['sp'] },
      { index: 3, valType: 'f64', mutable: false, imported: false, exportNames: ['c'] },
      { index: 4, valType: 'i64', mutable: true, imported: false, exportNames: [] },
    ])
    assert.equal(info.hasStart, true)
    const byName = new Map(info.exports.map((e) => [e.name, e]))
    assert.deepEqual(byName.get('memory'), { name: 'memory', kind: 'memory', index: 0 })
    assert.deepEqual(byName.get('sp'), { name: 'sp', kind: 'global', index: 2 })
    assert.deepEqual(byName.get('c'), { name: 'c', kind: 'global', index: 3 })
  })

  test('resolves export signatures through the function index space (imports first)', () => {
    const byName = new Map(binary.parseModule(FULL).exports.map((e) => [e.name, e]))
    assert.deepEqual(byName.get('process_chunk'), {
      name: 'process_chunk',
      kind: 'function',
      index: 3,
      funcType: { params: ['i32', 'i32'], results: ['i32'] },
    })
    assert.deepEqual(byName.get('alloc')?.funcType, { params: ['i32'], results: ['i32'] })
    assert.deepEqual(byName.get('get_v')?.funcType, { params: [], results: ['i64'] })
  })

  test('agrees with the engine on export and import names and kinds', () => {
    const m = new WA.Module(FULL)
    const info = binary.parseModule(FULL)
    assert.deepEqual(
      info.exports.map((e) => [e.name, e.kind]),
      WA.Module.exports(m).map((e) => [e.name, e.kind]),
    )
    assert.deepEqual(
      info.imports.map((e) => [e.module, e.name, e.kind]),
      WA.Module.imports(m).map((e) => [e.module, e.name, e.kind]),
    )
  })

  test('reports imported memories, shared memories and memory64', () => {
    assert.deepEqual(binary.parseModule(IMPORTED_MEMORY).imports[0], {
      module: 'env',
      name: 'memory',
      kind: 'memory',
      memory: { initial: 1, maximum: undefined, shared: false, memory64: false },
    })
    const shared = wat('(module (memory 1 8 shared))', { threads: true })
    assert.deepEqual(binary.parseModule(shared).memories, [{ initial: 1, maximum: 8, shared: true, memory64: false }])
    const m64 = wat('(module (memory i64 3))', { memory64: true })
    assert.deepEqual(binary.parseModule(m64).memories, [{ initial: 3, maximum: undefined, shared: false, memory64: true }])
  })

  test('steps over every supported constant expression form', () => {
    const bytes = wat(
      `(module
        (import "env" "base" (global $base i32))
        (global (mut i32) (i32.add (global.get $base) (i32.const 4)))
        (global (mut i32) (i32.sub (i32.const -2147483648) (i32.mul (i32.const 3) (i32.const 7))))
        (global i64 (i64.sub (i64.mul (i64.const 3) (i64.const -9223372036854775808)) (i64.add (i64.const 1) (i64.const 2))))
        (global (mut v128) (v128.const i32x4 1 2 3 4))
        (global (mut funcref) (ref.null func))
        (global funcref (ref.func $f))
        (global (mut externref) (ref.null extern))
        (global f32 (f32.const 1.5))
        (global f64 (f64.const -0.25))
        (func $f)
        (elem declare func $f))`,
      { extended_const: true, simd: true, reference_types: true, bulk_memory: true },
    )
    const info = binary.parseModule(bytes)
    assert.deepEqual(
      info.globals.map((g) => [g.valType, g.mutable, g.imported]),
      [
        ['i32', false, true],
        ['i32', true, false],
        ['i32', true, false],
        ['i64', false, false],
        ['v128', true, false],
        ['funcref', true, false],
        ['funcref', false, false],
        ['externref', true, false],
        ['f32', false, false],
        ['f64', false, false],
      ],
    )
  })

  test('accepts redundant (but in-width) LEB padding, as the spec does', () => {
    // Type section whose count is 1 encoded in 5 bytes, and an i32.const -1 in its 5-byte form.
    const bytes = mod(
      [1, [0x81, 0x80, 0x80, 0x80, 0x00, 0x60, 0x00, 0x00]],
      [6, [0x01, 0x7f, 0x00, 0x41, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x0b]],
    )
    assert.equal(WA.validate(bytes), true)
    assert.equal(binary.parseModule(bytes).globals.length, 1)
  })

  test('reads bytes backed by a SharedArrayBuffer', () => {
    const shared = new Uint8Array(new SharedArrayBuffer(FULL.length))
    shared.set(FULL)
    assert.deepEqual(binary.parseModule(shared), binary.parseModule(FULL))
    assert.equal(WA.validate(binary.exportMutableGlobals(shared).bytes), true)
  })

  test('uses the module name in messages', () => {
    assertInvalid(() => binary.parseModule(Uint8Array.of(1, 2, 3), 'guest.wasm'), /^guest\.wasm is not a valid/)
    assertInvalid(() => binary.parseModule(Uint8Array.of(1, 2, 3)), /^<module> is not a valid/)
  })
})

describe('limitMemory', () => {
  test('adds a maximum where none is declared, and the engine enforces it', () => {
    const out = binary.limitMemory(GROW, 4)
    assert.notEqual(out, GROW)
    assert.deepEqual(binary.parseModule(out).memories, [{ initial: 1, maximum: 4, shared: false, memory64: false }])

    const m = new WA.Module(out)
    const wasm = new WA.Instance(m).exports as { grow(n: number): number; size(): number; memory: WasmMemory }
    assert.equal(wasm.grow(3), 1) // to exactly the limit
    assert.equal(wasm.size(), 4)
    assert.equal(wasm.grow(1), -1) // one page more
    assert.equal(wasm.size(), 4)

    const js = new WA.Instance(m).exports as { memory: WasmMemory }
    assert.equal(js.memory.grow(3), 1)
    assert.throws(() => js.memory.grow(1), RangeError)
    assert.equal(js.memory.buffer.byteLength, 4 * binary.PAGE_SIZE)
  })

  test('lowers a maximum above the limit', () => {
    const bytes = wat('(module (memory (export "memory") 1 100))')
    const out = binary.limitMemory(bytes, 4)
    assert.equal(binary.parseModule(out).memories[0]?.maximum, 4)
    const memory = new WA.Instance(new WA.Module(out)).exports.memory as WasmMemory
    assert.equal(memory.grow(3), 1)
    assert.throws(() => memory.grow(1), RangeError)
  })

  test('keeps a maximum at or below the limit and returns the same bytes', () => {
    const below = wat('(module (memory 1 2))')
    assert.equal(binary.limitMemory(below, 4), below)
    const equal = wat('(module (memory 1 4))')
    assert.equal(binary.limitMemory(equal, 4), equal)
    const none = wat('(module (func))')
    assert.equal(binary.limitMemory(none, 4), none)
  })

  test('refuses an initial size over the limit with ERR_WASM_MEMORY_LIMIT', () => {
    const bytes = wat('(module (memory 8))')
    assert.throws(
      () => binary.limitMemory(bytes, 4, 'big.wasm'),
      (err: unknown) => {
        assert.ok(isSandboxError(err, 'ERR_WASM_MEMORY_LIMIT'))
        assert.match((err as Error).message, /big\.wasm/)
        assert.match((err as Error).message, new RegExp(String(8 * binary.PAGE_SIZE)))
        assert.match((err as Error).message, new RegExp(String(4 * binary.PAGE_SIZE)))
        return true
      },
    )
    assert.throws(() => binary.limitMemory(IMPORTED_MEMORY, 0), (err: unknown) => isSandboxError(err, 'ERR_WASM_MEMORY_LIMIT'))
  })

  test('lowers an imported memory, so only a host memory within the limit links', () => {
    const out = binary.limitMemory(IMPORTED_MEMORY, 4)
    assert.deepEqual(binary.parseModule(out).imports[0]?.memory, { initial: 1, maximum: 4, shared: false, memory64: false })
    const m = new WA.Module(out)
    const good = new WA.Memory({ initial: 1, maximum: 4 })
    const wasm = new WA.Instance(m, { env: { memory: good } }).exports as { grow(n: number): number }
    assert.equal(wasm.grow(3), 1)
    assert.equal(wasm.grow(1), -1)
    assert.throws(
      () => new WA.Instance(m, { env: { memory: new WA.Memory({ initial: 1 }) } }),
      WA.LinkError,
    )
  })

  test('keeps the shared flag', () => {
    const bytes = wat('(module (memory (export "memory") 1 100 shared))', { threads: true })
    const out = binary.limitMemory(bytes, 4)
    assert.deepEqual(binary.parseModule(out).memories, [{ initial: 1, maximum: 4, shared: true, memory64: false }])
    const memory = new WA.Instance(new WA.Module(out)).exports.memory as WasmMemory
    assert.ok(memory.buffer instanceof SharedArrayBuffer)
    assert.equal(memory.grow(3), 1)
    assert.throws(() => memory.grow(1), RangeError)
  })

  test('refuses memory64', () => {
    const bytes = wat('(module (memory i64 1))', { memory64: true })
    assertInvalid(() => binary.limitMemory(bytes, 4), /memory64 is not supported/)
  })

  test('re-encodes the section size when it needs more LEB bytes, copying everything else verbatim', () => {
    // An import section of 127 bytes: adding the maximum pushes its size LEB from 1 to 2 bytes.
    const name = 'm'.repeat(115) // 1 (count) + 1+115 (module) + 7 ("memory") + 3 (kind, flags, min)
    const importPayload = [0x01, ...str(name), ...str('memory'), 0x02, 0x00, 0x01]
    assert.equal(importPayload.length, 127)
    const exportPayload = [0x01, ...str('f'), 0x00, 0x00]
    const bytes = mod([1, [0x01, 0x60, 0x00, 0x00]], [2, importPayload], [3, [0x01, 0x00]], [7, exportPayload], [10, [0x01, 0x02, 0x00, 0x0b]])
    const out = binary.limitMemory(bytes, 300)
    assert.equal(out.length, bytes.length + 1 /* size LEB */ + 2 /* max LEB */)
    assert.deepEqual(out.subarray(0, 8 + 6), bytes.subarray(0, 8 + 6)) // header + type section
    assert.deepEqual([...out.subarray(14, 17)], [2, ...uleb(129)])
    assert.deepEqual([...out.subarray(out.length - 17)], [...bytes.subarray(bytes.length - 17)]) // function, export, code
    assert.deepEqual(binary.parseModule(out).imports[0]?.memory?.maximum, 300)
    assert.equal(WA.validate(out), true)
  })

  test('rejects a nonsensical limit as an option error', () => {
    for (const bad of [-1, 1.5, Number.NaN, 65537, Infinity]) {
      assert.throws(() => binary.limitMemory(GROW, bad), (err: unknown) => isSandboxError(err, 'ERR_WASM_INVALID_OPTION'))
    }
  })
})

describe('importMemory', () => {
  const imports = (m: WasmModule) => WA.Module.imports(m).map((i) => `${i.module}.${i.name}:${i.kind}`)

  test('moves the one defined memory to an import with its limits; data, exports and code still use it', () => {
    const source = wat(`(module
      (import "env" "f" (func $f (param i32)))
      (memory (export "mem") 2 5)
      (data (i32.const 8) "hi")
      (func (export "peek") (result i32) (i32.load8_u (i32.const 9))))`)
    const moved = binary.importMemory(source, 'host', 'memory')!
    assert.deepEqual(moved.limits, { initial: 2, maximum: 5, shared: false, memory64: false })
    const module = new WA.Module(moved.bytes)
    assert.deepEqual(imports(module), ['env.f:function', 'host.memory:memory'])
    assert.equal(binary.parseModule(moved.bytes).memories.length, 0)
    const memory = new WA.Memory({ initial: 2, maximum: 5 })
    new Uint8Array(memory.buffer).fill(7)
    const exports = new WA.Instance(module, { env: { f: () => {} }, host: { memory } }).exports
    assert.equal(exports.mem, memory, 'the export is the memory given')
    assert.equal((exports.peek as () => number)(), 'i'.charCodeAt(0), 'the data segment was written into it')
    assert.equal(new Uint8Array(memory.buffer)[0], 7, 'and nothing else was')
  })

  test('adds an import section in the right place when there is none', () => {
    const source = wat(`(module (type (func)) (memory 1) (func (export "size") (result i32) (memory.size)))`)
    const moved = binary.importMemory(source, 'host', 'memory')!
    const module = new WA.Module(moved.bytes)
    assert.deepEqual(imports(module), ['host.memory:memory'])
    const exports = new WA.Instance(module, { host: { memory: new WA.Memory({ initial: 1 }) } }).exports
    assert.equal((exports.size as () => number)(), 1)
  })

  test('changes nothing for an imported memory, none, or a shared one', () => {
    for (const text of [
      `(module (import "env" "memory" (memory 1)))`,
      `(module (func))`,
    ]) {
      assert.equal(binary.importMemory(wat(text), 'host', 'memory'), undefined, text)
    }
    const shared = wat(`(module (memory 1 1 shared))`, { threads: true })
    assert.equal(binary.importMemory(shared, 'host', 'memory'), undefined)
  })
})

describe('exportMutableGlobals', () => {
  test('exports unexported mutable globals, keeps existing names, and they work through instance.exports', () => {
    const { bytes, globals } = binary.exportMutableGlobals(FULL)
    assert.deepEqual(globals, [
      { index: 0, exportName: '__wasm_sandbox_global_0', valType: 'i32' },
      { index: 2, exportName: 'sp', valType: 'i32' },
      { index: 4, exportName: '__wasm_sandbox_global_4', valType: 'i64' },
    ])
    const info = binary.parseModule(bytes)
    assert.deepEqual(info.globals.map((g) => g.exportNames), [['__wasm_sandbox_global_0'], [], ['sp'], ['c'], ['__wasm_sandbox_global_4']])
    // The original exports are still there, unchanged.
    for (const e of binary.parseModule(FULL).exports) assert.ok(info.exports.some((x) => x.name === e.name && x.index === e.index))

    const imports = fullImports()
    const exports = new WA.Instance(new WA.Module(bytes), imports).exports as Record<string, unknown>
    const g0 = exports.__wasm_sandbox_global_0 as WasmGlobal
    const v = exports.__wasm_sandbox_global_4 as WasmGlobal
    const sp = exports.sp as WasmGlobal
    assert.equal(g0.value, 7)
    assert.equal(v.value, -1n)
    v.value = 42n
    assert.equal((exports.get_v as () => bigint)(), 42n)
    sp.value = 2048
    assert.equal((exports.alloc as (n: number) => number)(0), 2048)
  })

  test('adds an export section in the right place when there is none', () => {
    // type, function, global, custom, start, code, custom: the new section must land after
    // global and before start; the custom sections stay where they were.
    const bytes = mod(
      [1, [0x01, 0x60, 0x00, 0x00]],
      [3, [0x01, 0x00]],
      [6, [0x02, 0x7f, 0x01, 0x41, 0x05, 0x0b, 0x7c, 0x01, 0x44, 0, 0, 0, 0, 0, 0, 0x04, 0x40, 0x0b]],
      [0, [...str('meta'), 1, 2, 3]],
      [8, [0x00]],
      // func $s: global.set 0 (i32.const 6)
      [10, [0x01, 0x06, 0x00, 0x41, 0x06, 0x24, 0x00, 0x0b]],
      [0, [...str('tail')]],
    )
    assert.equal(WA.validate(bytes), true)
    const { bytes: out, globals } = binary.exportMutableGlobals(bytes)
    assert.deepEqual(globals, [
      { index: 0, exportName: '__wasm_sandbox_global_0', valType: 'i32' },
      { index: 1, exportName: '__wasm_sandbox_global_1', valType: 'f64' },
    ])
    const m = new WA.Module(out)
    assert.equal(WA.Module.customSections(m, 'meta').length, 1)
    assert.equal(WA.Module.customSections(m, 'tail').length, 1)
    const exports = new WA.Instance(m).exports as Record<string, WasmGlobal>
    assert.equal(exports.__wasm_sandbox_global_0?.value, 6) // the start function ran
    assert.equal(exports.__wasm_sandbox_global_1?.value, 2.5)
    exports.__wasm_sandbox_global_1!.value = 1
    assert.equal(exports.__wasm_sandbox_global_1?.value, 1)

    // wabt-built module without exports (custom sections absent) also works.
    const plain = wat('(module (global (mut i32) (i32.const 3)) (func) (data "x") (memory 1))')
    const r = binary.exportMutableGlobals(plain, 'g')
    assert.deepEqual(r.globals, [{ index: 0, exportName: 'g0', valType: 'i32' }])
    const e = new WA.Instance(new WA.Module(r.bytes)).exports as Record<string, WasmGlobal>
    assert.equal(e.g0?.value, 3)
  })

  test('appends the export section when it is the last thing the module can hold', () => {
    const bytes = mod([6, [0x01, 0x7e, 0x01, 0x42, 0x07, 0x0b]])
    const { bytes: out } = binary.exportMutableGlobals(bytes, 'x')
    const e = new WA.Instance(new WA.Module(out)).exports as Record<string, WasmGlobal>
    assert.equal(e.x0?.value, 7n)
  })

  test('avoids clashing with an existing export of the generated name', () => {
    const bytes = wat('(module (global (mut i32) (i32.const 1)) (func (export "__wasm_sandbox_global_0")))')
    const { bytes: out, globals } = binary.exportMutableGlobals(bytes)
    assert.deepEqual(globals, [{ index: 0, exportName: '__wasm_sandbox_global_0_1', valType: 'i32' }])
    const e = new WA.Instance(new WA.Module(out)).exports as Record<string, unknown>
    assert.equal(typeof e.__wasm_sandbox_global_0, 'function')
    assert.equal((e.__wasm_sandbox_global_0_1 as WasmGlobal).value, 1)
  })

  test('returns the same bytes when nothing needs exporting', () => {
    const none = wat('(module (global i32 (i32.const 1)) (func))')
    assert.equal(binary.exportMutableGlobals(none).bytes, none)
    const already = wat('(module (global (export "g") (mut i32) (i32.const 1)))')
    const r = binary.exportMutableGlobals(already)
    assert.equal(r.bytes, already)
    assert.deepEqual(r.globals, [{ index: 0, exportName: 'g', valType: 'i32' }])
  })

  test('grows the export section size LEB when needed', () => {
    // 60 mutable globals, exported names push the export section well past 127 bytes.
    const globals = Array.from({ length: 60 }, (_, i) => `(global (mut i32) (i32.const ${i}))`).join(' ')
    const bytes = wat(`(module ${globals} (func (export "f")))`)
    const { bytes: out, globals: list } = binary.exportMutableGlobals(bytes)
    assert.equal(list.length, 60)
    const e = new WA.Instance(new WA.Module(out)).exports as Record<string, WasmGlobal>
    assert.equal(e.__wasm_sandbox_global_59?.value, 59)
  })

  test('rejects a prefix that cannot be encoded faithfully', () => {
    assert.throws(() => binary.exportMutableGlobals(FULL, 'bad\ud800'), (err: unknown) => isSandboxError(err, 'ERR_WASM_INVALID_OPTION'))
  })
})

describe('malformed input', () => {
  const all = (bytes: Uint8Array): void => {
    assertSafe(() => binary.parseModule(bytes))
    assertSafe(() => binary.limitMemory(bytes, 8), ['ERR_WASM_INVALID_MODULE', 'ERR_WASM_MEMORY_LIMIT'])
    assertSafe(() => binary.exportMutableGlobals(bytes))
  }

  test('every truncation of a valid module parses or fails cleanly', () => {
    for (const base of [FULL, GROW, IMPORTED_MEMORY]) {
      for (let i = 0; i <= base.length; i++) {
        const cut = base.slice(0, i)
        all(cut)
        if (i < 8) assertInvalid(() => binary.parseModule(cut))
      }
    }
  })

  test('bad header', () => {
    assertInvalid(() => binary.parseModule(new Uint8Array(0)), /too short/)
    assertInvalid(() => binary.parseModule(Uint8Array.of(0, 0x61, 0x73, 0x6e, 1, 0, 0, 0)), /magic/)
    assertInvalid(() => binary.parseModule(Uint8Array.of(0, 0x61, 0x73, 0x6d, 2, 0, 0, 0)), /version/)
    assertInvalid(() => binary.parseModule(Uint8Array.of(0, 0x61, 0x73, 0x6d, 0x0d, 0, 1, 0)), /version/)
    assertInvalid(() => binary.parseModule('not bytes' as unknown as Uint8Array), /Uint8Array/)
  })

  test('huge vector counts are refused without allocating', () => {
    const huge = [0xff, 0xff, 0xff, 0xff, 0x0f]
    assertInvalid(() => binary.parseModule(mod([1, huge])), /count 4294967295 exceeds/)
    assertInvalid(() => binary.parseModule(mod([2, huge])), /count 4294967295 exceeds/)
    assertInvalid(() => binary.parseModule(mod([6, huge])), /count/)
    assertInvalid(() => binary.parseModule(mod([7, huge])), /count/)
    assertInvalid(() => binary.parseModule(mod([1, [0x01, 0x60, ...huge]])), /param count/)
    // A name whose length runs past the section.
    assertInvalid(() => binary.parseModule(mod([2, [0x01, ...huge, 0x61]])), /count/)
    // A section whose size runs past the end of the module.
    assertInvalid(() => binary.parseModule(rawModule([1, ...huge, 0x00])), /runs past the end/)
  })

  test('over-long and out-of-range LEBs', () => {
    // Section size in 6 bytes.
    assertInvalid(() => binary.parseModule(rawModule([1, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00])), /too long/)
    // Section size with bits above 32.
    assertInvalid(() => binary.parseModule(rawModule([1, 0x80, 0x80, 0x80, 0x80, 0x10])), /out of range/)
    // Count that never terminates before the section end.
    assertInvalid(() => binary.parseModule(mod([1, [0x80, 0x80, 0x80]])), /unexpected end/)
    // i32.const with 6 bytes, and with a 5th byte that is not a sign extension.
    const g = (c: number[]): Uint8Array => mod([6, [0x01, 0x7f, 0x00, 0x41, ...c, 0x0b]])
    assertInvalid(() => binary.parseModule(g([0x80, 0x80, 0x80, 0x80, 0x80, 0x00])), /s32/)
    assertInvalid(() => binary.parseModule(g([0xff, 0xff, 0xff, 0xff, 0x4f])), /s32/)
    assertInvalid(() => binary.parseModule(g([0x80, 0x80, 0x80, 0x80, 0x08])), /s32/)
    assert.equal(binary.parseModule(g([0x80, 0x80, 0x80, 0x80, 0x78])).globals.length, 1)
    // i64.const with 11 bytes, and with a 10th byte that is not a sign extension.
    const g64 = (c: number[]): Uint8Array => mod([6, [0x01, 0x7e, 0x00, 0x42, ...c, 0x0b]])
    assertInvalid(() => binary.parseModule(g64([...Array<number>(10).fill(0x80), 0x00])), /s64/)
    assertInvalid(() => binary.parseModule(g64([...Array<number>(9).fill(0xff), 0x3f])), /s64/)
    assert.equal(binary.parseModule(g64([...Array<number>(9).fill(0xff), 0x7f])).globals.length, 1)
    // Memory64 limit above 2^53 pages.
    assertInvalid(() => binary.parseModule(mod([5, [0x01, 0x04, ...Array<number>(9).fill(0xff), 0x01]])), /out of range|limit/)
    for (const bytes of [g([0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), g([0xff, 0xff, 0xff, 0xff, 0x4f])]) {
      assert.equal(WA.validate(bytes), false)
    }
  })

  test('structural errors', () => {
    const type = [1, [0x01, 0x60, 0x00, 0x00]] as [number, number[]]
    assertInvalid(() => binary.parseModule(mod([14, []])), /unknown section id 14/)
    assertInvalid(() => binary.parseModule(mod(type, type)), /duplicated or out of order/)
    assertInvalid(() => binary.parseModule(mod([3, [0x00]], type)), /out of order/)
    assertInvalid(() => binary.parseModule(mod([1, [0x01, 0x5e, 0x78, 0x00]])), /unsupported type form 0x5e/)
    assertInvalid(() => binary.parseModule(mod([1, [0x01, 0x4e, 0x00]])), /unsupported/)
    assertInvalid(() => binary.parseModule(mod([1, [0x01, 0x60, 0x01, 0x40, 0x00]])), /value type/)
    assertInvalid(() => binary.parseModule(mod([1, [0x01, 0x60, 0x00, 0x00, 0x00]])), /trailing/)
    assertInvalid(() => binary.parseModule(mod([3, [0x01, 0x00]])), /type index 0 is out of range/)
    assertInvalid(() => binary.parseModule(mod([2, [0x01, ...str('a'), ...str('b'), 0x05]])), /import kind/)
    assertInvalid(() => binary.parseModule(mod([2, [0x01, 0x01, 0xff, ...str('b'), 0x03, 0x7f, 0x00]])), /UTF-8/)
    assertInvalid(() => binary.parseModule(mod([5, [0x01, 0x02, 0x01]])), /shared memory must declare a maximum/)
    assertInvalid(() => binary.parseModule(mod([5, [0x01, 0x01, 0x05, 0x02]])), /larger than its maximum/)
    assertInvalid(() => binary.parseModule(mod([5, [0x01, 0x00, ...uleb(65537)]])), /page limit/)
    assertInvalid(() => binary.parseModule(mod([5, [0x01, 0x08, 0x00]])), /limits flags/)
    assertInvalid(() => binary.parseModule(mod([6, [0x01, 0x7f, 0x02, 0x41, 0x00, 0x0b]])), /mutability/)
    assertInvalid(() => binary.parseModule(mod([6, [0x01, 0x7f, 0x00, 0x01, 0x0b]])), /unsupported instruction 0x01/)
    assertInvalid(() => binary.parseModule(mod([6, [0x01, 0x7f, 0x00, 0x41, 0x00]])), /unexpected end/)
    assertInvalid(() => binary.parseModule(mod([6, [0x01, 0x70, 0x00, 0xd0, 0x00, 0x0b]])), /heap type/)
    assertInvalid(() => binary.parseModule(mod([6, [0x01, 0x7b, 0x00, 0xfd, 0x0d, 0x0b]])), /0xfd 13/)
    assertInvalid(() => binary.parseModule(mod([7, [0x01, ...str('f'), 0x00, 0x00]])), /does not exist/)
    assertInvalid(() => binary.parseModule(mod([7, [0x01, ...str('f'), 0x07, 0x00]])), /export kind/)
    assertInvalid(() => binary.parseModule(mod([6, [0x01, 0x7f, 0x00, 0x41, 0x00, 0x0b]], [7, [0x02, ...str('g'), 0x03, 0x00, ...str('g'), 0x03, 0x00]])), /duplicate export/)
    assertInvalid(() => binary.parseModule(mod([8, [0x00]])), /start function 0 does not exist/)
    assertInvalid(() => binary.parseModule(mod(type, [3, [0x01, 0x00]], [8, [0x00, 0x00]])), /trailing/)
    // Skipped sections still have their size honoured.
    assert.equal(binary.parseModule(mod([0, [...str('x'), 0xff, 0xff]], [11, [0x00]])).hasStart, false)
  })

  test('property: random mutations of valid modules parse or fail with a sandbox error', () => {
    const seeds = [FULL, GROW, IMPORTED_MEMORY, wat('(module (memory 1 100 shared) (global (mut i32) (i32.const 1)))', { threads: true })]
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), value: fc.constant(0) }),
    )
    fc.assert(
      fc.property(
        fc.constantFrom(...seeds),
        fc.array(mutation, { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 0, max: 200 }),
        (seed, mutations, maxPages) => {
          const b = [...seed]
          for (const m of mutations) {
            const at = m.at % (b.length + 1)
            if (m.kind === 'set' && at < b.length) b[at] = m.value
            else if (m.kind === 'insert') b.splice(at, 0, m.value)
            else if (m.kind === 'delete') b.splice(at, 1)
          }
          const bytes = Uint8Array.from(b)
          const engineValid = WA.validate(bytes)
          let info: binary.ModuleInfo | undefined
          assertSafe(() => (info = binary.parseModule(bytes)))
          if (info && engineValid) {
            const m = new WA.Module(bytes)
            assert.deepEqual(
              info.exports.map((e) => [e.name, e.kind]),
              WA.Module.exports(m).map((e) => [e.name, e.kind]),
            )
          }
          let limited: Uint8Array | undefined
          assertSafe(() => (limited = binary.limitMemory(bytes, maxPages)), ['ERR_WASM_INVALID_MODULE', 'ERR_WASM_MEMORY_LIMIT'])
          if (limited && engineValid) assert.equal(WA.validate(limited), true)
          let exported: Uint8Array | undefined
          assertSafe(() => (exported = binary.exportMutableGlobals(bytes).bytes))
          if (exported && engineValid) assert.equal(WA.validate(exported), true)
        },
      ),
      { numRuns: 300 },
    )
  })
})
