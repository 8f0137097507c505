#!/usr/bin/env node
// Before/after throughput of two builds of this package, measured in one run, interleaved so
// that machine noise falls on both alike.
//
//   node scripts/bench-compare.mjs <before/dist> <after/dist> [--reps 5] [--mib 256]
//
// e.g. `git worktree add /tmp/before <commit> && (cd /tmp/before && npm ci)`, then
// `npm run build && node scripts/bench-compare.mjs /tmp/before/dist dist`.
// Prints MB/s (median of reps) per scenario and after/before.
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { reps: { type: 'string', default: '5' }, mib: { type: 'string', default: '256' } },
})
if (positionals.length !== 2) {
  console.error('usage: node scripts/bench-compare.mjs <before/dist> <after/dist> [--reps n] [--mib n]')
  process.exit(2)
}
const [before, after] = await Promise.all(positionals.map((d) => import(pathToFileURL(resolve(d, 'index.js')).href)))
const reps = Number(values.reps)
const total = Number(values.mib) * 1024 * 1024
const examples = resolve(import.meta.dirname, '..', 'examples')

/** One chunk of text, repeated: the source hands out the same bytes as fresh views. */
function source(chunk, bytes) {
  let sent = 0
  return new Readable({
    read() {
      if (sent >= bytes) return this.push(null)
      sent += chunk.length
      this.push(chunk.subarray())
    },
  })
}

const sink = () => new Writable({ write: (_c, _e, cb) => cb() })

const scenarios = [
  { name: 'upper inline 64K', guest: 'upper.wasm', options: { isolation: 'inline', bufferSize: 65536 } },
  { name: 'upper worker 64K', guest: 'upper.wasm', options: { isolation: 'worker', bufferSize: 65536 } },
  { name: 'upper worker 16K', guest: 'upper.wasm', options: { isolation: 'worker', bufferSize: 16384 } },
  { name: 'pass inline 4K', guest: 'pass.wasm', options: { isolation: 'inline', bufferSize: 4096 }, share: 0.25 },
  { name: 'numberer worker 64K', guest: 'numberer.wasm', options: { isolation: 'worker', bufferSize: 65536 }, share: 0.5 },
  { name: 'upper-scalar worker skip 64K', guest: 'upper-scalar.wasm', options: { isolation: 'worker', bufferSize: 65536, recoveryStrategy: 'skip', limits: { maxOutputPerChunk: 1 << 20 } }, share: 0.25 },
  { name: 'upper inline skip 64K', guest: 'upper.wasm', options: { isolation: 'inline', bufferSize: 65536, recoveryStrategy: 'skip', limits: { maxOutputPerChunk: 1 << 20 } } },
]

async function once(api, s) {
  const bytes = Math.floor(total * (s.share ?? 1))
  const line = Buffer.from('the quick brown fox jumps over the lazy dog 0123456789\n')
  const chunk = Buffer.alloc(s.options.bufferSize)
  for (let i = 0; i < chunk.length; i += line.length) line.copy(chunk, i)
  const started = performance.now()
  await pipeline(source(chunk, bytes), api.wasmTransform(resolve(examples, s.guest), s.options), sink())
  return bytes / 1e6 / ((performance.now() - started) / 1000)
}

/** Many short streams: the cost of starting one. */
async function starts(api, isolation) {
  const n = isolation === 'inline' ? 400 : 40
  const input = Buffer.alloc(1024, 97)
  const started = performance.now()
  for (let i = 0; i < n; i++) await pipeline(Readable.from([input]), api.wasmTransform(resolve(examples, 'pass.wasm'), { isolation }), sink())
  return (performance.now() - started) / n
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
console.log(`scenario                          before    after   after/before   (MB/s, median of ${reps}; ms for 1 KiB streams)`)
for (const s of scenarios) {
  const b = [], a = []
  await once(before, s), await once(after, s)
  for (let i = 0; i < reps; i++) {
    b.push(await once(before, s))
    a.push(await once(after, s))
  }
  console.log(`${s.name.padEnd(32)} ${median(b).toFixed(0).padStart(7)} ${median(a).toFixed(0).padStart(8)} ${(median(a) / median(b)).toFixed(2).padStart(10)}`)
}
for (const isolation of ['inline', 'worker']) {
  const b = [], a = []
  for (let i = 0; i < reps; i++) {
    b.push(await starts(before, isolation))
    a.push(await starts(after, isolation))
  }
  console.log(`${('1 KiB stream ' + isolation + ' (ms)').padEnd(32)} ${median(b).toFixed(2).padStart(7)} ${median(a).toFixed(2).padStart(8)} ${(median(a) / median(b)).toFixed(2).padStart(10)}`)
}
