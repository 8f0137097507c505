/**
 * The memory.grow hook's rewriter (lib/guest/grow-hook.ts): every bundled module round-trips
 * (valid, each memory.grow now a call to the hook, nothing else changed), bytes 0x40 inside
 * immediates are never taken for memory.grow, post-MVP instructions are decoded, anything
 * unknown leaves the module as it was, hooked guests compute the same output, and trap offsets
 * still point into the guest's own file.
 */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import wabtInit from 'wabt'
import { GROW_RECORD_EXPORT, hookMemoryGrow, originalOffset, type GrowHookResult } from '../lib/guest/grow-hook.js'
import { loadGuest, wasmTransform, type WasmSandboxError } from '../lib/index.js'
import { example, readExample, repoRoot } from './helpers/reference.js'
import { randomLines, run } from './helpers/streams.js'

const wabt = await wabtInit()
type Features = Parameters<typeof wabt.parseWat>[2]
// multi_memory is a wabt feature its typings do not list.
const ALL = { simd: true, bulk_memory: true, threads: true, exceptions: true, tail_call: true, multi_value: true, reference_types: true, multi_memory: true } as Features

function wat(text: string, features: Features = ALL): Uint8Array {
  const m = wabt.parseWat('test.wat', text, features)
  try {
    m.resolveNames()
    return Uint8Array.from(m.toBinary({}).buffer)
  } finally {
    m.destroy()
  }
}

/** wabt's text for a binary, one instruction a line (no folding), so lines can be compared. */
function text(bytes: Uint8Array): string {
  const m = wabt.readWasm(bytes, { readDebugNames: false, ...ALL, relaxed_simd: true } as Parameters<typeof wabt.readWasm>[1])
  try {
    return m.toText({ foldExprs: false, inlineExport: false })
  } finally {
    m.destroy()
  }
}

function hooked(result: GrowHookResult): Extract<GrowHookResult, { kind: 'hooked' }> {
  assert.equal(result.kind, 'hooked', JSON.stringify(result))
  return result as Extract<GrowHookResult, { kind: 'hooked' }>
}

const count = (s: string, re: RegExp): number => s.match(re)?.length ?? 0

/**
 * The hooked text is the original's with each `memory.grow` turned into `call <hook>`, plus
 * only additions: every line of that, in order, is a line of the hooked text.
 */
function assertOnlyGrowsReplaced(original: Uint8Array, result: Extract<GrowHookResult, { kind: 'hooked' }>): void {
  // Without the module's closing parenthesis, which ends its last line.
  const before = text(original).replace(/\)\s*$/, '')
  const after = text(result.bytes).replace(/\)\s*$/, '')
  const grows = count(before, /memory\.grow/g)
  assert.ok(grows > 0)
  assert.equal(count(after, new RegExp(`call ${result.firstHook}\\n`, 'g')), grows, 'every memory.grow became a call to the hook')
  assert.equal(count(after, /memory\.grow/g), 1, 'the only memory.grow left is in the hook')
  const expected = before.replace(/memory\.grow( \d+)?\n/g, `call ${result.firstHook}\n`).split('\n')
  const lines = after.split('\n')
  let at = 0
  for (const line of expected) {
    while (at < lines.length && lines[at] !== line) at++
    assert.ok(at < lines.length, `line ${JSON.stringify(line)} is missing or out of order`)
    at++
  }
}

function wasmFiles(dir: string): string[] {
  const out: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...wasmFiles(path))
    else if (entry.name.endsWith('.wasm')) out.push(path)
  }
  return out
}

describe('memory.grow hook: the decoder', () => {
  test('every example and fixture module round-trips: valid, each memory.grow a call to the hook, nothing else changed', () => {
    const files = [...wasmFiles(join(repoRoot, 'examples')), ...wasmFiles(join(repoRoot, 'spec', 'fixtures'))]
    assert.ok(files.length > 60, `found ${files.length} modules`)
    const kinds = { hooked: 0, none: 0 }
    for (const file of files) {
      if (file.endsWith('truncated.wasm')) continue
      const bytes = new Uint8Array(readFileSync(file))
      const result = hookMemoryGrow(bytes, file)
      assert.notEqual(result.kind, 'skipped', `${file}: ${JSON.stringify(result)}`)
      if (result.kind === 'none') {
        assert.equal(count(text(bytes), /memory\.grow/g), 0, file)
        kinds.none++
        continue
      }
      const r = hooked(result)
      assert.ok(WebAssembly.validate(r.bytes), `${file} is still valid`)
      assertOnlyGrowsReplaced(bytes, r)
      const exports = WebAssembly.Module.exports(new WebAssembly.Module(r.bytes)).map((e) => e.name)
      const before = WebAssembly.Module.exports(new WebAssembly.Module(bytes)).map((e) => e.name)
      assert.deepEqual(exports, [...before, GROW_RECORD_EXPORT], file)
      kinds.hooked++
    }
    // The C and SIMD guests are among them.
    assert.ok(kinds.hooked >= 40 && kinds.none >= 5, JSON.stringify(kinds))
    assert.equal(hookMemoryGrow(readExample('upper.wasm')).kind, 'hooked', 'upper.wasm (SIMD)')
    assert.equal(hookMemoryGrow(readExample('guests/c-wasi/wordfreq.wasm')).kind, 'hooked', 'a clang-built WASI guest')
  })

  test('0x40 bytes in immediates are not memory.grow; the guest computes the same', () => {
    const dummies = Array.from({ length: 64 }, (_, i) => `(func $d${i} (result i32) (i32.const ${i}))`).join('\n')
    const bytes = wat(`(module
      (memory (export "memory") 1)
      (global $g (mut i32) (i32.const -64))
      (data $d "@@@@")
      ${dummies}
      (func $f64 (result i32) (i32.const -64))
      (func (export "run") (result i32)
        (local ${'i32 '.repeat(70)}) (local $v v128)
        (block (drop (i32.const -64)))                          ;; block type 0x40, i32.const -64 = 0x40
        (block ${'(block '.repeat(64)} (br_table 3 64 64 (i32.const 5)) ${')'.repeat(64)}) ;; labels 0x40
        (local.set 64 (call $f64))                              ;; local.set 64, call 64
        (i32.store offset=64 (i32.const 0) (local.get 64))      ;; memarg offset 0x40
        (i32.store8 offset=64 align=1 (i32.const 1) (i32.const 64))
        (drop (i64.const -64))
        (drop (f32.const 2))                                     ;; 00 00 00 40
        (drop (f64.const 2))                                     ;; ... 40
        (local.set $v (v128.const i8x16 64 64 64 64 64 64 64 64 64 64 64 64 64 64 64 64))
        (v128.store offset=64 (i32.const 64) (local.get $v))
        (memory.fill (i32.const 200) (i32.const 64) (i32.const 64))
        (memory.init $d (i32.const 300) (i32.const 0) (i32.const 4))
        (memory.copy (i32.const 400) (i32.const 300) (i32.const 64))
        (global.set $g (i32.add (global.get $g) (memory.grow (i32.const 0))))
        (drop (memory.grow (i32.const 1)))
        (i32.add (i32.load offset=64 (i32.const 0)) (global.get $g)))
    )`)
    const r = hooked(hookMemoryGrow(bytes))
    assertOnlyGrowsReplaced(bytes, r)
    const run = (b: Uint8Array): [number, Uint8Array] => {
      const e = new WebAssembly.Instance(new WebAssembly.Module(b)).exports as { run(): number; memory: WebAssembly.Memory }
      return [e.run(), new Uint8Array(e.memory.buffer).slice()]
    }
    const [a, memA] = run(bytes)
    const [b, memB] = run(r.bytes)
    assert.equal(b, a)
    assert.equal(memB.length, 2 * 65536, 'the hook grew the memory')
    assert.deepEqual(memB, memA)
  })

  test('SIMD lanes and shuffles, atomics, legacy exceptions, tail calls and br_table are decoded', () => {
    const bytes = wat(`(module
      (type $t (func (param i32) (result i32)))
      (memory (export "memory") 1 1 shared)
      (table 2 funcref)
      (tag $e (param i32))
      (func $id (type $t) (local.get 0))
      (elem (i32.const 0) $id)
      (func $tail (param i32) (result i32) (return_call $id (local.get 0)))
      (func (export "run") (param $x i32) (result i32)
        (local $v v128)
        (local.set $v (i8x16.shuffle 0 16 1 17 2 18 3 19 4 20 5 21 6 22 7 23 (v128.const i64x2 64 64) (v128.const i64x2 64 64)))
        (local.set $v (i8x16.replace_lane 15 (local.get $v) (i32.const 64)))
        (local.set $v (v128.load8_lane 15 (i32.const 64) (local.get $v)))
        (v128.store16_lane offset=64 7 (i32.const 0) (local.get $v))
        (drop (v128.load32_zero offset=64 (i32.const 0)))
        (drop (i32.atomic.rmw.add offset=64 (i32.const 0) (i32.const 64)))
        (drop (i64.atomic.rmw.cmpxchg offset=64 (i32.const 0) (i64.const 64) (i64.const 64)))
        (atomic.fence)
        (drop (memory.atomic.notify (i32.const 0) (i32.const 0)))
        (block $a (block $b (block $c (br_table $a $b $c (local.get $x)))))
        (drop (call_indirect (type $t) (i32.const 64) (i32.const 0)))
        (drop (try (result i32) (do (throw $e (i32.const 64))) (catch $e) (catch_all (i32.const 64))))
        (drop (select (result i32) (i32.const 64) (i32.const 1) (local.get $x)))
        (drop (ref.is_null (ref.null func)))
        (drop (ref.func $id))
        (drop (i32.trunc_sat_f32_s (f32.const 64)))
        (drop (memory.grow (i32.const 0)))
        (i32.add (call $tail (i32x4.extract_lane 0 (local.get $v))) (i8x16.extract_lane_u 3 (local.get $v))))
    )`)
    const r = hooked(hookMemoryGrow(bytes))
    assertOnlyGrowsReplaced(bytes, r)
    assert.ok(WebAssembly.validate(bytes), 'Node accepts the original')
    assert.ok(WebAssembly.validate(r.bytes), 'and the hooked module')
    const call = (b: Uint8Array): number => (new WebAssembly.Instance(new WebAssembly.Module(b)).exports as { run(x: number): number }).run(1)
    assert.equal(call(r.bytes), call(bytes))
  })

  test('multi-memory: one hook per memory grown, each growing its own memory', () => {
    // Node 20 does not run multi-memory; this checks the rewrite only.
    const bytes = wat(`(module
      (memory $a 1) (memory $b 1)
      (func (drop (memory.grow $a (i32.const 1))) (drop (memory.grow $b (i32.const 1))) (drop (i32.load $b offset=64 (i32.const 0)))))`)
    const r = hooked(hookMemoryGrow(bytes))
    const after = text(r.bytes)
    assert.equal(count(after, /call 1\n/g), 1)
    assert.equal(count(after, /call 2\n/g), 1)
    assert.match(after, /memory\.grow\n[\s\S]*memory\.grow 1\n/)
  })

  test('an unknown opcode, local type or block type leaves the module unrewritten, saying where', () => {
    const base = wat('(module (memory 1) (func (local i32) (drop (memory.grow (i32.const 1))) (block (nop) (nop) (nop))))')
    const at = (seq: number[]): number => {
      for (let i = 0; i + seq.length <= base.length; i++) if (seq.every((b, j) => base[i + j] === b)) return i
      throw new Error(`${seq} is not in the module`)
    }
    const nops = at([0x01, 0x01, 0x01, 0x0b])
    const cases: [offset: number, bytes: number[], reason: RegExp][] = [
      [nops, [0x27], /opcode 0x27 at byte offset/], // unassigned
      [nops, [0xfb, 0x00], /opcode 0xfb at byte offset/], // the GC prefix
      [nops, [0xfd, 0x9a, 0x01], /opcode 0xfd 154 at byte offset/], // an unassigned SIMD opcode
      [nops, [0xfc, 0x12], /opcode 0xfc 18 at byte offset/], // past the last 0xfc one
      [at([0x01, 0x01, 0x7f, 0x41]) + 2, [0x63], /local of type 0x63/], // (ref null ...)
      [at([0x02, 0x40]) + 1, [0x6e], /block type 0x6e/], // a reference type with a heap type
    ]
    for (const [offset, bytes, reason] of cases) {
      const broken = base.slice()
      broken.set(bytes, offset)
      const result = hookMemoryGrow(broken)
      assert.equal(result.kind, 'skipped', String(reason))
      assert.match((result as { reason: string }).reason, reason)
    }
    assert.equal(hookMemoryGrow(base).kind, 'hooked', 'and the module as it was is hooked')
  })

  test('no memory.grow: nothing to add; no globals or exports: both sections added, in order', () => {
    assert.deepEqual(hookMemoryGrow(wat('(module (memory 1) (func (drop (memory.size))))')), { kind: 'none' })
    const bare = wat('(module (memory 1) (func (drop (memory.grow (i32.const 1)))) (start 0) (data (i32.const 0) "x"))')
    const r = hooked(hookMemoryGrow(bare))
    assert.ok(WebAssembly.validate(r.bytes))
    const instance = new WebAssembly.Instance(new WebAssembly.Module(r.bytes))
    assert.equal((instance.exports[GROW_RECORD_EXPORT] as WebAssembly.Global).value, 0n, 'the start function grew fine')
  })

  test('the record is set on a refusal only: (pages then << 32) | pages asked for', () => {
    const bytes = wat(`(module (memory (export "memory") 1 3)
      (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))`)
    const r = hooked(hookMemoryGrow(bytes))
    const e = new WebAssembly.Instance(new WebAssembly.Module(r.bytes)).exports as { grow(n: number): number } & Record<string, WebAssembly.Global>
    const record = e[GROW_RECORD_EXPORT]!
    assert.equal(e.grow(1), 1)
    assert.equal(record.value, 0n)
    assert.equal(e.grow(5), -1)
    assert.equal(record.value, (2n << 32n) | 5n)
    assert.equal(e.grow(-1), -1, 'a request of 2^32-1 pages')
    assert.equal(record.value, (2n << 32n) | 0xffffffffn)
  })

  test('the record export avoids a name the guest took', () => {
    const bytes = wat(`(module (memory 1) (func (export "${GROW_RECORD_EXPORT}") (drop (memory.grow (i32.const 1)))))`)
    const r = hooked(hookMemoryGrow(bytes))
    assert.equal(r.record, `${GROW_RECORD_EXPORT}_1`)
    const exports = WebAssembly.Module.exports(new WebAssembly.Module(r.bytes))
    assert.deepEqual(exports.map((e) => [e.name, e.kind]), [[GROW_RECORD_EXPORT, 'function'], [`${GROW_RECORD_EXPORT}_1`, 'global']])
  })

  test('property: random bodies mixing memory.grow with immediates full of 0x40 bytes', () => {
    const int = fc.oneof(fc.constantFrom(64, -64, 0x40, 0x4040, -0x40404040, 0), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }))
    const small = fc.oneof(fc.constant(64), fc.integer({ min: 0, max: 60000 }))
    const snippet = fc.oneof(
      int.map((n) => [`(drop (i32.const ${n}))`, 0] as const),
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((n) => [`(drop (i64.const ${n}))`, 0] as const),
      // Infinity is `inf` in the text format (a run with its own seed drew it and failed to parse).
      fc.double({ noNaN: true }).map((x) => [`(drop (f64.const ${Number.isFinite(x) ? x : x > 0 ? 'inf' : '-inf'}))`, 0] as const),
      fc.constant([`(drop (memory.grow (i32.const 0)))`, 1] as const),
      int.map((n) => [`(if (i32.const ${n}) (then (drop (memory.grow (i32.const 0)))))`, 1] as const),
      fc.tuple(small, int).map(([o, n]) => [`(i32.store offset=${o} align=1 (i32.const 0) (i32.const ${n}))`, 0] as const),
      small.map((o) => [`(local.set 100 (i32.load8_u offset=${o} (i32.const 0)))`, 0] as const),
      fc.tuple(int, int).map(([a, b]) => [`(v128.store offset=64 (i32.const 0) (v128.const i32x4 ${a} ${b} 64 ${a}))`, 0] as const),
      fc.array(fc.integer({ min: 0, max: 31 }), { minLength: 16, maxLength: 16 }).map(
        (l) => [`(v128.store (i32.const 128) (i8x16.shuffle ${l.join(' ')} (v128.load (i32.const 0)) (v128.const i64x2 64 64)))`, 0] as const,
      ),
      int.map((n) => [`(block (br_if 0 (i32.const ${n})) (i32.store (i32.const 8) (i32.const 64)))`, 0] as const),
      fc.tuple(fc.integer({ min: 0, max: 129 }), int).map(([k, n]) => [`(local.set ${k} (i32.const ${n}))`, 0] as const),
      fc.tuple(int, small).map(([n, o]) => [`(memory.fill (i32.const ${o}) (i32.const ${n & 0xff}) (i32.const 16))`, 0] as const),
      int.map((n) => [`(block (block (br_table 0 1 0 1 (i32.const ${n}))))`, 0] as const),
    )
    fc.assert(
      fc.property(fc.array(snippet, { minLength: 1, maxLength: 40 }), (snippets) => {
        const grows = snippets.reduce((n, [, g]) => n + g, 0)
        const body = snippets.map(([s]) => s).join('\n')
        const bytes = wat(`(module (memory (export "memory") 1)
          (func (export "run") (local ${'i32 '.repeat(130)}) ${body}))`)
        const result = hookMemoryGrow(bytes)
        if (grows === 0) return assert.deepEqual(result, { kind: 'none' })
        const r = hooked(result)
        assert.ok(WebAssembly.validate(r.bytes))
        assert.equal(count(text(r.bytes), new RegExp(`call ${r.firstHook}\\n`, 'g')), grows)
        const memory = (b: Uint8Array): Uint8Array => {
          const e = new WebAssembly.Instance(new WebAssembly.Module(b)).exports as { run(): void; memory: WebAssembly.Memory }
          e.run()
          return new Uint8Array(e.memory.buffer)
        }
        assert.deepEqual(memory(r.bytes), memory(bytes))
      }),
      { numRuns: 60 },
    )
  })

  test('originalOffset: the last pair at or before an offset applies', () => {
    const pairs = [0, 2, 100, 7, 150, 5]
    assert.equal(originalOffset(pairs, 50), 48)
    assert.equal(originalOffset(pairs, 100), 93)
    assert.equal(originalOffset(pairs, 149), 142)
    assert.equal(originalOffset(pairs, 1000), 995)
    assert.equal(originalOffset([], 10), 10)
  })
})

describe('memory.grow hook: hooked guests behave the same', () => {
  test('examples give the same output hooked as unhooked (precompiled, so not rewritten)', async () => {
    // Text: linenum refuses a NUL byte.
    const input = randomLines(400_000, 5)
    for (const name of ['upper.wasm', 'upper-scalar.wasm', 'wc.wasm', 'numberer.wasm', 'grep.wasm', 'counter-global.wasm', 'guests/c/linenum.wasm']) {
      const loaded = await loadGuest(example(name), { memoryLimit: 64 * 1024 * 1024 })
      assert.ok(loaded.growHook, `${name} is hooked`)
      const options = { isolation: 'inline', bufferSize: 16 * 1024 } as const
      const hookedOut = await run(wasmTransform(loaded, options), input, [1000, 70_000, 3])
      const plainOut = await run(wasmTransform(await WebAssembly.compile(readExample(name)), options), input, [1000, 70_000, 3])
      assert.ok(plainOut.length > 0, name)
      assert.ok(hookedOut.equals(plainOut), `${name}: the same output`)
    }
  })

  test("a trap after hooked grows in the same function: offsets into the guest's own file, as unhooked", async () => {
    // 200 functions before process_chunk, so the hook's index takes a two-byte LEB and every
    // call is longer than the memory.grow it replaces: offsets move within the body.
    const dummies = Array.from({ length: 200 }, (_, i) => `(func (result i32) (i32.const ${i}))`).join('\n')
    const bytes = Buffer.from(
      wat(`(module
        (import "sandbox" "emit" (func $emit (param i32 i32)))
        (memory (export "memory") 2)
        ${dummies}
        (func (export "alloc") (param i32) (result i32) (drop (memory.grow (i32.const 0))) (i32.const 1024))
        (func $inner (param i32)
          (drop (memory.grow (i32.const 0)))
          (drop (memory.grow (i32.const 0)))
          (if (local.get 0) (then unreachable)))
        (func (export "process_chunk") (param i32 i32) (result i32)
          (drop (memory.grow (i32.const 0)))
          (call $inner (i32.load8_u (local.get 0)))
          (drop (memory.grow (i32.const 0)))
          (i32.const 0)))`),
    )
    const trap = async (module: Buffer | WebAssembly.Module): Promise<WasmSandboxError> => {
      const err = await run(wasmTransform(module, { isolation: 'inline' }), Buffer.from('x')).then(
        () => assert.fail('expected a trap'),
        (e: WasmSandboxError) => e,
      )
      assert.equal(err.code, 'ERR_WASM_TRAP', err.message)
      return err
    }
    const hookedErr = await trap(bytes)
    const plainErr = await trap(await WebAssembly.compile(bytes))
    const frames = hookedErr.backtrace!.map((f) => [f.func, f.offset])
    assert.deepEqual(frames, plainErr.backtrace!.map((f) => [f.func, f.offset]))
    assert.equal(frames.length, 2)
    assert.equal(bytes[frames[0]![1]!], 0x00, 'unreachable')
    assert.equal(bytes[frames[1]![1]!], 0x10, 'the call to $inner')
  })
})
