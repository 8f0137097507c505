#!/usr/bin/env node
// Rebuilds the bundled guest modules from their WAT sources with the `wabt` npm package
// (the only compiler the project uses; nothing else needs to be installed).
//
//   node scripts/build-wasm.mjs                     compile examples/*.wat and spec/fixtures/*.wat
//                                                   to the .wasm beside each, and write the derived
//                                                   fixtures (truncated.wasm, random.bin)
//   node scripts/build-wasm.mjs --check             same, but write nothing: exit 1 if any committed
//                                                   output differs from a fresh build
//   node scripts/build-wasm.mjs --grep-pattern foo  build only examples/grep-foo.wasm, a grep guest
//                                                   for the pattern "foo" (--out FILE to choose the path)
//
// Output is deterministic: running it twice gives byte-identical files.

import { readFile, writeFile, readdir } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import wabtInit from 'wabt'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const examplesDir = join(root, 'examples')
const fixturesDir = join(root, 'spec', 'fixtures')

// Post-MVP features the guests may use. SIMD is used by examples/upper.wat; the rest are the
// features Node 20 supports anyway. Kept explicit so the output does not depend on wabt defaults.
const FEATURES = {
  simd: true,
  bulk_memory: true,
  sign_extension: true,
  sat_float_to_int: true,
  mutable_globals: true,
  multi_value: true,
}

const { values: args } = parseArgs({
  options: {
    'grep-pattern': { type: 'string' },
    out: { type: 'string' },
    check: { type: 'boolean', default: false },
    quiet: { type: 'boolean', short: 'q', default: false },
  },
})

const wabt = await wabtInit()
const log = (msg) => {
  if (!args.quiet) console.log(msg)
}

// Fixtures built with a `name` section (their $names), for the trap backtrace tests; every other
// module is built without one, as before.
const WITH_NAMES = new Set(['spec/fixtures/trap-names.wat'])

/** Compiles WAT text to a wasm binary (Uint8Array). Throws with the wabt diagnostics on error. */
function compileWat(fileName, text) {
  const mod = wabt.parseWat(fileName, text, FEATURES)
  try {
    mod.resolveNames()
    mod.validate()
    const { buffer } = mod.toBinary({ log: false, write_debug_names: WITH_NAMES.has(fileName), canonicalize_lebs: true })
    return Buffer.from(buffer)
  } finally {
    mod.destroy()
  }
}

/** Checks that V8 accepts the module too (compiles it; does not instantiate it). */
function checkCompiles(fileName, bytes) {
  try {
    new WebAssembly.Module(bytes)
  } catch (err) {
    throw new Error(`${fileName}: wabt built it but V8 rejects it: ${err.message}`)
  }
}

// ---------------------------------------------------------------------------------------------
// grep pattern substitution

const PATTERN_BLOCK = /(;; PATTERN-BEGIN\n)[\s\S]*?(\n\s*;; PATTERN-END)/

/** WAT string literal for arbitrary bytes (printable ASCII kept, everything else as \hh). */
function watString(bytes) {
  let s = ''
  for (const b of bytes) {
    if (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c) s += String.fromCharCode(b)
    else s += '\\' + b.toString(16).padStart(2, '0')
  }
  return `"${s}"`
}

/** Rewrites grep.wat's PATTERN block for another pattern (the pattern lives at offset 64). */
export function grepWatFor(templateText, pattern) {
  const bytes = Buffer.from(pattern, 'utf8')
  if (bytes.includes(0x0a)) throw new Error('--grep-pattern must not contain a newline')
  if (!PATTERN_BLOCK.test(templateText)) throw new Error('examples/grep.wat has no PATTERN-BEGIN/END block')
  const heapBase = Math.max(1024, Math.ceil((64 + bytes.length) / 16) * 16)
  const pages = Math.max(2, Math.ceil((heapBase + 65536) / 65536))
  const block = [
    `  (memory (export "memory") ${pages})`,
    `  (global $pat_len i32 (i32.const ${bytes.length}))`,
    `  (global $heap_base i32 (i32.const ${heapBase}))`,
    `  (data (i32.const 64) ${watString(bytes)})`,
  ].join('\n')
  return templateText.replace(PATTERN_BLOCK, (_m, begin, end) => `${begin}${block}${end}`)
}

/** File-name-safe form of a pattern, for examples/grep-<pattern>.wasm. */
function safeName(pattern) {
  const s = pattern.replace(/[^A-Za-z0-9._-]/g, '_')
  return s.length > 0 && s.length <= 64 ? s : Buffer.from(pattern).toString('hex').slice(0, 64) || 'empty'
}

// ---------------------------------------------------------------------------------------------
// deterministic derived fixtures

/** mulberry32: small seeded PRNG, enough for reproducible test bytes. */
function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function randomBytes(n, seed) {
  const next = mulberry32(seed)
  const out = Buffer.alloc(n)
  for (let i = 0; i < n; i++) out[i] = Math.floor(next() * 256)
  return out
}

// ---------------------------------------------------------------------------------------------

/** Map of absolute output path -> bytes, filled by the build, then written or checked. */
const outputs = new Map()

async function watFiles(dir) {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.wat')).sort()
  return names.map((n) => join(dir, n))
}

async function buildWatFile(watPath) {
  const rel = relative(root, watPath)
  const bytes = compileWat(rel, await readFile(watPath, 'utf8'))
  checkCompiles(rel, bytes)
  outputs.set(watPath.replace(/\.wat$/, '.wasm'), bytes)
  return bytes
}

async function buildAll() {
  for (const f of await watFiles(examplesDir)) await buildWatFile(f)
  for (const f of await watFiles(fixturesDir)) await buildWatFile(f)

  // truncated.wasm: the first half of examples/pass.wasm (a cut-off download, say).
  const pass = outputs.get(join(examplesDir, 'pass.wasm'))
  outputs.set(join(fixturesDir, 'truncated.wasm'), pass.subarray(0, Math.floor(pass.length / 2)))
  // random.bin: 256 seeded pseudo-random bytes (not a wasm module).
  outputs.set(join(fixturesDir, 'random.bin'), randomBytes(256, 0x5eed1234))
}

async function buildGrep(pattern) {
  const template = await readFile(join(examplesDir, 'grep.wat'), 'utf8')
  const text = grepWatFor(template, pattern)
  const out = args.out ? resolve(args.out) : join(examplesDir, `grep-${safeName(pattern)}.wasm`)
  const bytes = compileWat(`grep-${safeName(pattern)}.wat`, text)
  checkCompiles(relative(root, out), bytes)
  outputs.set(out, bytes)
}

async function main() {
  if (args['grep-pattern'] !== undefined) await buildGrep(args['grep-pattern'])
  else await buildAll()

  let stale = 0
  for (const [path, bytes] of outputs) {
    const rel = relative(root, path)
    let old = null
    try {
      old = await readFile(path)
    } catch {}
    const same = old !== null && Buffer.compare(old, bytes) === 0
    if (args.check) {
      if (!same) {
        stale++
        console.error(`stale: ${rel} (run: npm run examples:build)`)
      }
      continue
    }
    if (!same) await writeFile(path, bytes)
    log(`${same ? 'unchanged' : 'wrote    '} ${rel} (${bytes.length} bytes)`)
  }
  if (stale > 0) process.exit(1)
  if (args.check) log(`ok: ${outputs.size} files up to date`)
}

await main()
