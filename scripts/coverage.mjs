#!/usr/bin/env node
// Line, branch and function coverage of lib/, with nothing to install: runs the test suite with
// NODE_V8_COVERAGE set, so every process it starts (test files, the child processes they spawn,
// the CLI) and every worker thread leaves V8's block coverage behind, then reports it per lib/ file.
//
//   npm run coverage                          builds, runs build/spec/, prints the table
//   node scripts/coverage.mjs build/spec/chunker.test.js     only some test files (build first)
//   node scripts/coverage.mjs --test-reporter=dot            other arguments go to `node --test`
//   node scripts/coverage.mjs --from DIR      no test run: report on what NODE_V8_COVERAGE=DIR collected
//
// Measured on the compiled lib, dist/ and build/lib/ (the same JavaScript: the tests import
// build/lib/, the CLI and the package entry run from dist/), merged, and mapped back to lib/*.ts
// lines through the source maps. A line counts if it holds code (not blank, not only a comment)
// and is covered if any of its code ran in any process or thread. A branch is a block as V8 counts
// them: every function body, and inside the functions that ran, each arm of if/else, ?:, &&, ||,
// ??, each switch case, loop body and catch, and the code after an early return; it is covered if
// it was entered anywhere. (V8 does not look inside a function that never ran: its body counts as
// one uncovered branch.) A file no test loads counts as uncovered lines only.
//
// Node 20's --experimental-test-coverage is not used: it has no way to limit the report to lib/
// (--test-coverage-include came in Node 22), and on this suite it failed to report at all.
//
// Exits with the test run's status, after printing the table.

import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const dist = join(root, 'dist')
const buildLib = join(root, 'build', 'lib')
const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

const args = process.argv.slice(2)
const from = args.indexOf('--from')
if (from >= 0) {
  report(readCoverage(resolve(args[from + 1])))
} else {
  const testArgs = args.some((a) => !a.startsWith('-')) ? args : [...args, 'build/spec/']
  const dataDir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-coverage-'))
  try {
    const run = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...testArgs], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, NODE_V8_COVERAGE: dataDir },
    })
    report(readCoverage(dataDir))
    process.exitCode = run.status ?? 1
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/** The compiled lib files (from dist/), keyed by their path inside it, with V8's data merged in. */
function readCoverage(dir) {
  const files = new Map()
  for (const rel of listJs(dist)) {
    const source = readFileSync(join(dist, rel), 'utf8')
    files.set(rel, { rel, source, executed: new Uint8Array(source.length), branches: new Map(), functions: new Map(), loaded: false })
  }
  // build/lib/ counts only where it is the same code as dist/ (offsets must agree).
  const roots = [realpathSync(dist)]
  if (existsSync(buildLib)) roots.push(realpathSync(buildLib))
  const sameAsDist = new Set()
  for (const [rel, file] of files) {
    const twin = join(buildLib, rel)
    if (existsSync(twin) && readFileSync(twin, 'utf8') === file.source) sameAsDist.add(rel)
  }

  let processes = 0
  for (const name of readdirSync(dir)) {
    if (!/^coverage-.*\.json$/.test(name)) continue
    processes++
    const { result } = JSON.parse(readFileSync(join(dir, name), 'utf8'))
    for (const script of result) {
      if (!script.url.startsWith('file:')) continue
      const path = fileURLToPath(script.url)
      const base = roots.find((r) => path.startsWith(r + sep))
      if (!base) continue
      const rel = relative(base, path)
      const file = files.get(rel)
      if (!file || (base !== roots[0] && !sameAsDist.has(rel))) continue
      merge(file, script.functions)
    }
  }
  return { files: [...files.values()], processes }
}

/** Adds one process's (or thread's) coverage of a file: what ran, and every block it reported. */
function merge(file, functions) {
  file.loaded = true
  // Each character takes the count of the innermost range around it: paint outer ranges first.
  const ranges = functions.flatMap((f) => f.ranges)
  ranges.sort((a, b) => b.endOffset - b.startOffset - (a.endOffset - a.startOffset))
  const ran = new Uint8Array(file.source.length)
  for (const r of ranges) ran.fill(r.count > 0 ? 1 : 0, r.startOffset, r.endOffset)
  for (let i = 0; i < ran.length; i++) file.executed[i] |= ran[i]
  // functions[0] is the module itself, its first range the whole file.
  for (const [i, f] of functions.entries()) {
    for (const [j, r] of f.ranges.entries()) {
      const key = `${r.startOffset}:${r.endOffset}`
      if (i > 0 && j === 0) file.functions.set(key, r)
      if (i > 0 || j > 0) file.branches.set(key, r)
    }
  }
}

/** Covered when any character inside ran somewhere: code inside a block runs only if it was entered. */
function entered(file, { startOffset, endOffset }) {
  for (let i = startOffset; i < endOffset; i++) if (file.executed[i]) return true
  return false
}

function report({ files, processes }) {
  const rows = []
  const total = { lines: [0, 0], branches: [0, 0], functions: [0, 0] }
  for (const file of files) {
    const { ts, lines, covered } = tsLines(file)
    if (lines.size === 0) continue // types only
    const uncovered = [...lines].filter((l) => !covered.has(l)).sort((a, b) => a - b)
    const branches = [...file.branches.values()]
    const functions = [...file.functions.values()]
    const row = {
      name: ts,
      lines: [lines.size - uncovered.length, lines.size],
      branches: [branches.filter((r) => entered(file, r)).length, branches.length],
      functions: [functions.filter((r) => entered(file, r)).length, functions.length],
      uncovered: file.loaded ? spans(uncovered) : 'never loaded',
    }
    for (const k of ['lines', 'branches', 'functions']) {
      total[k][0] += row[k][0]
      total[k][1] += row[k][1]
    }
    rows.push(row)
  }
  rows.sort((a, b) => a.name.localeCompare(b.name))
  rows.push({ name: 'all files', ...total, uncovered: '' })
  const pct = ([n, of]) => (of === 0 ? '-' : `${((100 * n) / of).toFixed(1)} %`).padStart(7) + ` ${`${n}/${of}`.padEnd(9)}`
  const width = Math.max(...rows.map((r) => r.name.length))
  const lines = [
    `coverage of lib/ from ${processes} processes and threads (compiled code in dist/ and build/lib/, mapped to lib/*.ts)`,
    '',
    `${'file'.padEnd(width)}  ${'lines'.padEnd(17)}  ${'branches'.padEnd(17)}  ${'functions'.padEnd(17)}  uncovered lines`,
  ]
  for (const r of rows) {
    if (r.name === 'all files') lines.push('-'.repeat(width + 60))
    const tail = r.uncovered.length > 60 ? r.uncovered.slice(0, r.uncovered.lastIndexOf(' ', 58)) + ' …' : r.uncovered
    lines.push(`${r.name.padEnd(width)}  ${pct(r.lines)}  ${pct(r.branches)}  ${pct(r.functions)}  ${tail}`.trimEnd())
  }
  process.stdout.write('\n' + lines.join('\n') + '\n')
}

/**
 * The lib/*.ts lines that hold code, and those of them that ran: each code line of the compiled
 * file belongs to the TS line its first source-map segment points at.
 */
function tsLines(file) {
  const map = JSON.parse(readFileSync(join(dist, file.rel + '.map'), 'utf8'))
  const ts = relative(root, resolve(dirname(join(dist, file.rel)), map.sourceRoot || '', map.sources[0]))
  const firstSegments = decodeFirstSegments(map.mappings)
  const lines = new Set()
  const covered = new Set()
  let offset = 0
  for (const [i, text] of file.source.split('\n').entries()) {
    const start = offset
    offset += text.length + 1
    const code = text.trim()
    if (code === '' || code.startsWith('//') || code.startsWith('/*') || code.startsWith('*')) continue
    const original = firstSegments[i]
    if (original === undefined) continue
    lines.add(original + 1)
    for (let c = start; c < start + text.length; c++) {
      if (file.executed[c] && text[c - start] !== ' ' && text[c - start] !== '\t') {
        covered.add(original + 1)
        break
      }
    }
  }
  return { ts, lines, covered }
}

/** Source maps v3: for each generated line, the original (0-based) line of its first segment. */
function decodeFirstSegments(mappings) {
  const out = []
  let sourceLine = 0
  for (const line of mappings.split(';')) {
    let first
    for (const segment of line.split(',')) {
      if (segment === '') continue
      const fields = decodeVlq(segment)
      if (fields.length < 4) continue
      sourceLine += fields[2]
      first ??= sourceLine
    }
    out.push(first)
  }
  return out
}

function decodeVlq(segment) {
  const values = []
  let value = 0
  let shift = 0
  for (const ch of segment) {
    const digit = BASE64.indexOf(ch)
    value += (digit & 31) << shift
    if (digit & 32) shift += 5
    else {
      values.push(value & 1 ? -(value >>> 1) : value >>> 1)
      value = shift = 0
    }
  }
  return values
}

/** 3 4 5 9 → "3-5 9" */
function spans(lines) {
  const out = []
  for (let i = 0; i < lines.length; i++) {
    let j = i
    while (j + 1 < lines.length && lines[j + 1] === lines[j] + 1) j++
    out.push(j > i ? `${lines[i]}-${lines[j]}` : `${lines[i]}`)
    i = j
  }
  return out.join(' ')
}

function listJs(dir, prefix = '') {
  const out = []
  for (const entry of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const rel = join(prefix, entry.name)
    if (entry.isDirectory()) out.push(...listJs(dir, rel))
    else if (entry.name.endsWith('.js')) out.push(rel)
  }
  return out.sort()
}
