/**
 * `npm run build:spec && node build/bench/load.js [--mb 100,120] [--source path|buffer|both] [--small 7]`
 *
 * What loading a guest costs the host: for a generated ABI v1 module of each size (1,000-byte
 * functions, spec/helpers/big-module.ts), the load time, the longest the host's event loop was
 * blocked while it loaded (a 1 ms timer records its largest gap), and the growth of the process's
 * RSS after the load and at its peak; then the same for examples/upper.wasm, the median over
 * `--small` fresh processes. Each load runs in a fresh child process, so no cache, warm code or
 * earlier garbage counts. Figures on a loaded machine are noisy: rerun before trusting a
 * difference of a few milliseconds.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { bigModule } from '../spec/helpers/big-module.js'
import { loadGuest } from '../lib/index.js'
import { DEFAULT_LIMITS } from '../lib/options.js'

const MB = 1_000_000
const MiB = 1024 * 1024

interface Measured {
  loadMs: number
  stallMs: number
  rssAfterMiB: number
  /** Half a second later: a thread that did the work has ended by then. */
  rssSettledMiB: number
  rssPeakMiB: number
}

/** In the child: loads `file` (by path, or from a Buffer read beforehand) and measures. */
async function measure(file: string, source: 'path' | 'buffer'): Promise<Measured> {
  const module = source === 'buffer' ? readFileSync(file) : file
  const before = process.memoryUsage.rss()
  let last = performance.now()
  let stallMs = 0
  const ticker = setInterval(() => {
    const t = performance.now()
    stallMs = Math.max(stallMs, t - last)
    last = t
  }, 1)
  // Let the ticker settle, so its first gap is not the start-up of the process.
  await new Promise((resolve) => setTimeout(resolve, 20))
  stallMs = 0
  last = performance.now()
  const start = performance.now()
  await loadGuest(module, { memoryLimit: DEFAULT_LIMITS.memory, maxModuleSize: 1024 * MiB })
  const loadMs = performance.now() - start
  // The tick after the load, so a stall at its very end is counted too.
  await new Promise((resolve) => setTimeout(resolve, 2))
  clearInterval(ticker)
  const rssAfter = process.memoryUsage.rss()
  await new Promise((resolve) => setTimeout(resolve, 500))
  const rssSettled = process.memoryUsage.rss()
  const peak = process.resourceUsage().maxRSS * 1024
  return { loadMs, stallMs, rssAfterMiB: (rssAfter - before) / MiB, rssSettledMiB: (rssSettled - before) / MiB, rssPeakMiB: (peak - before) / MiB }
}

function inChild(file: string, source: string): Measured {
  const script = fileURLToPath(import.meta.url)
  const child = spawnSync(process.execPath, [script, '--child', file, '--source', source], { encoding: 'utf8', timeout: 120_000 })
  const line = child.stdout.split('\n').find((l) => l.startsWith('LOAD_JSON '))
  if (!line) throw new Error(`child failed (status ${child.status}): ${child.stderr}`)
  return JSON.parse(line.slice('LOAD_JSON '.length)) as Measured
}

const fmt = (m: Measured): string =>
  `load ${m.loadMs.toFixed(1).padStart(7)} ms   longest stall ${m.stallMs.toFixed(1).padStart(7)} ms   RSS +${m.rssAfterMiB.toFixed(0).padStart(4)} MiB after, +${m.rssSettledMiB.toFixed(0).padStart(4)} MiB 0.5 s later, +${m.rssPeakMiB.toFixed(0).padStart(4)} MiB at peak`

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      child: { type: 'string' },
      source: { type: 'string', default: 'path' },
      mb: { type: 'string', default: '100,120' },
      small: { type: 'string', default: '7' },
    },
  })
  if (values.child) {
    const measured = await measure(values.child, values.source as 'path' | 'buffer')
    process.stdout.write(`LOAD_JSON ${JSON.stringify(measured)}\n`)
    return
  }
  const sources = values.source === 'both' ? ['path', 'buffer'] : [values.source!]
  const dir = mkdtempSync(join(tmpdir(), 'wasm-sandbox-load-'))
  const results: Record<string, Measured> = {}
  try {
    for (const mb of values.mb!.split(',').map(Number).filter((n) => n > 0)) {
      const { bytes, functions } = bigModule({ bytes: mb * MB })
      const file = join(dir, `big-${mb}.wasm`)
      writeFileSync(file, bytes)
      for (const source of sources) {
        const m = inChild(file, source)
        results[`${mb}MB-${source}`] = m
        console.log(`${String(mb).padStart(4)} MB (${functions} functions) from a ${source.padEnd(6)}  ${fmt(m)}`)
      }
      rmSync(file)
    }
    const runs = Number(values.small)
    if (runs > 0) {
      const upper = fileURLToPath(new URL('../../examples/upper.wasm', import.meta.url))
      for (const source of sources) {
        const all = Array.from({ length: runs }, () => inChild(upper, source))
        const m: Measured = {
          loadMs: median(all.map((r) => r.loadMs)),
          stallMs: median(all.map((r) => r.stallMs)),
          rssAfterMiB: median(all.map((r) => r.rssAfterMiB)),
          rssSettledMiB: median(all.map((r) => r.rssSettledMiB)),
          rssPeakMiB: median(all.map((r) => r.rssPeakMiB)),
        }
        results[`upper-${source}`] = m
        console.log(`examples/upper.wasm from a ${source.padEnd(6)} (median of ${runs})  ${fmt(m)}`)
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  console.log(`LOAD_BENCH_JSON ${JSON.stringify(results)}`)
}

await main()
