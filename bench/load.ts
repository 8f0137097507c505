/**
 * `npm run build:spec && node build/bench/load.js [--mb 100,120] [--source path|buffer|both] [--small 7]`
 *
 * What loading a guest costs the host: for a generated ABI v1 module of each size (1,000-byte
 * functions, spec/helpers/big-module.ts), the load time; the longest the host's event loop went
 * without running a 1 ms timer while it loaded, and the most CPU the main thread itself used in
 * one such gap (on a busy machine most of a gap is waiting for a core); and the growth of the
 * process's RSS after the load, half a second later and at its peak. Then the same for
 * examples/upper.wasm, the median over `--small` fresh processes. Each load runs in a fresh child
 * process, so no cache, warm code or earlier garbage counts. Figures on a loaded machine are
 * noisy: rerun before trusting a difference of a few milliseconds.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { bigModule } from '../spec/helpers/big-module.js'
import { watchEventLoop } from '../spec/helpers/event-loop.js'
import { loadGuest } from '../lib/index.js'
import { DEFAULT_LIMITS } from '../lib/options.js'
import { median } from './harness.js'

const MB = 1_000_000
const MiB = 1024 * 1024

interface Measured {
  loadMs: number
  stallMs: number
  /**
   * The most CPU time the main thread itself used between two ticks (Linux: its schedstat;
   * -1 elsewhere). On a busy machine a stall is mostly waiting for a core; this is the part the
   * loader's own work on the main thread causes.
   */
  busyMs: number
  rssAfterMiB: number
  /** Half a second later: a thread that did the work has ended by then. */
  rssSettledMiB: number
  rssPeakMiB: number
}

/** In the child: loads `file` (by path, or from a Buffer read beforehand) and measures. */
async function measure(file: string, source: 'path' | 'buffer'): Promise<Measured> {
  const module = source === 'buffer' ? readFileSync(file) : file
  const before = process.memoryUsage.rss()
  // Let the process settle, so the first gap is not its start-up.
  await new Promise((resolve) => setTimeout(resolve, 20))
  const watch = watchEventLoop()
  const start = performance.now()
  await loadGuest(module, { memoryLimit: DEFAULT_LIMITS.memory, maxModuleSize: 1024 * MiB })
  const loadMs = performance.now() - start
  // The tick after the load, so a stall at its very end is counted too.
  await new Promise((resolve) => setTimeout(resolve, 2))
  const { stallMs, busyMs } = watch.stop()
  const rssAfter = process.memoryUsage.rss()
  await new Promise((resolve) => setTimeout(resolve, 500))
  const rssSettled = process.memoryUsage.rss()
  const peak = process.resourceUsage().maxRSS * 1024
  return { loadMs, stallMs, busyMs: busyMs ?? -1, rssAfterMiB: (rssAfter - before) / MiB, rssSettledMiB: (rssSettled - before) / MiB, rssPeakMiB: (peak - before) / MiB }
}

function inChild(file: string, source: string): Measured {
  const script = fileURLToPath(import.meta.url)
  const child = spawnSync(process.execPath, [script, '--child', file, '--source', source], { encoding: 'utf8', timeout: 120_000 })
  const line = child.stdout.split('\n').find((l) => l.startsWith('LOAD_JSON '))
  if (!line) throw new Error(`child failed (status ${child.status}): ${child.stderr}`)
  return JSON.parse(line.slice('LOAD_JSON '.length)) as Measured
}

const fmt = (m: Measured): string =>
  `load ${m.loadMs.toFixed(1).padStart(7)} ms   longest stall ${m.stallMs.toFixed(1).padStart(6)} ms (main thread busy ${m.busyMs.toFixed(1).padStart(5)} ms at most)   RSS +${m.rssAfterMiB.toFixed(0).padStart(4)} MiB after, +${m.rssSettledMiB.toFixed(0).padStart(4)} MiB 0.5 s later, +${m.rssPeakMiB.toFixed(0).padStart(4)} MiB at peak`

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
          busyMs: median(all.map((r) => r.busyMs)),
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
