/**
 * One batch of the soak, run as a child process of runner.ts so that a crash or a hang cannot
 * hide: `node batch.js --seed S --from A --to B` (or `--replay DIR`). It reports on fd 3, one
 * JSON line per event, written synchronously so nothing is lost if the process dies next:
 * start, done (the outcome), hang, leak-workers, leak-handles, warning, end. After `end` it
 * exits by itself; a process that does not is held open by something the batch left behind.
 */
import { writeSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { WorkerPool } from '../lib/index.js'
import { generateCase, type CaseSpec } from './cases.js'
import { HANG_EXIT, type BatchEvent } from './protocol.js'
import { readReproducer } from './reproducer.js'
import { runCase, type Outcome } from './run-case.js'

/** A failed guest's worker is terminated asynchronously: time for it to be gone. */
const WORKER_GRACE_MS = 2000
const HANDLE_GRACE_MS = 2000
const INJECTED_BOUND_MS = 300

function send(event: BatchEvent): void {
  writeSync(3, JSON.stringify(event) + '\n')
}

function counts(): Map<string, number> {
  const m = new Map<string, number>()
  for (const r of process.getActiveResourcesInfo()) m.set(r, (m.get(r) ?? 0) + 1)
  return m
}

function extraOver(base: Map<string, number>, now: Map<string, number>): Record<string, number> {
  const extra: Record<string, number> = {}
  for (const [name, n] of now) if (n > (base.get(name) ?? 0)) extra[name] = n - (base.get(name) ?? 0)
  return extra
}

/** Polls `measure` until it is 0 or `ms` have passed; the last value. */
async function settles(measure: () => number, ms: number): Promise<number> {
  const until = Date.now() + ms
  let value = measure()
  while (value > 0 && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 5))
    value = measure()
  }
  return value
}

/**
 * Test hooks: `--inject kind@index` makes case `index` misbehave on purpose, so the tests can
 * show that each detector of the runner fires. Never used by `npm run soak` itself.
 */
function inject(kind: string, pool: WorkerPool): Promise<Outcome> | undefined {
  switch (kind) {
    case 'crash':
      process.kill(process.pid, 'SIGSEGV')
      return new Promise(() => {})
    case 'hang': // unsettled, with the event loop alive: the child's own timer catches it
      setInterval(() => {}, 1000)
      return new Promise(() => {})
    case 'block': // a blocked event loop: only the parent's watchdog can catch it
      for (;;);
    case 'untyped':
      return Promise.resolve({ kind: 'untyped', name: 'TypeError', message: 'injected', stack: 'injected' })
    case 'leak-worker':
      pool.acquire(() => {})
      return Promise.resolve({ kind: 'ok', bytes: 0, sha256: '', chunkErrors: 0 })
    case 'leak-handle':
      setInterval(() => {}, 1000)
      return Promise.resolve({ kind: 'ok', bytes: 0, sha256: '', chunkErrors: 0 })
    default:
      throw new Error(`unknown --inject ${kind}`)
  }
}

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: '1' },
    from: { type: 'string', default: '0' },
    to: { type: 'string', default: '0' },
    replay: { type: 'string', multiple: true },
    inject: { type: 'string', multiple: true },
  },
})
const injected = new Map((values.inject ?? []).map((s) => { const [kind, at] = s.split('@'); return [Number(at), kind!] as const }))

const specs: Array<() => CaseSpec> = values.replay
  ? values.replay.map((dir) => () => readReproducer(dir))
  : Array.from({ length: Number(values.to) - Number(values.from) }, (_, k) => () => generateCase(Number(values.seed), Number(values.from) + k))

// Imported and unused here only so that `Worker` is loaded before the baseline is taken: the
// first Worker load creates handles of its own that are not a case's doing.
void Worker
const pool = new WorkerPool()
let current = -1
process.on('warning', (w) => send({ t: 'warning', i: current, name: w.name, message: w.message }))
const base = counts()
/** Resources after each case, for naming the case that left one behind. */
const after: Array<[number, Map<string, number>]> = []
/** Workers already reported as leaked: each is counted once, on the case that left it. */
let reported = 0

for (const make of specs) {
  const spec = make()
  current = spec.index
  const kind = injected.get(spec.index)
  // An injected hang need not wait out a real case's bound.
  if (kind === 'hang' || kind === 'block') spec.boundMs = INJECTED_BOUND_MS
  send({ t: 'start', i: spec.index, boundMs: spec.boundMs })
  const started = Date.now()
  const timer = setTimeout(() => {
    send({ t: 'hang', i: spec.index, ms: Date.now() - started })
    process.exit(HANG_EXIT)
  }, spec.boundMs)
  const outcome = await (kind ? inject(kind, pool)! : runCase(spec, pool))
  clearTimeout(timer)
  send({ t: 'done', i: spec.index, ms: Date.now() - started, outcome })
  const busy = await settles(() => pool.size - pool.idleCount - reported, WORKER_GRACE_MS)
  if (busy > 0) send({ t: 'leak-workers', i: spec.index, busy, atEnd: false })
  reported += Math.max(busy, 0)
  after.push([spec.index, counts()])
}

pool.close()
const live = await settles(() => pool.size - reported, WORKER_GRACE_MS)
if (live > 0) send({ t: 'leak-workers', i: current, busy: live, atEnd: true })
let extra = extraOver(base, counts())
const until = Date.now() + HANDLE_GRACE_MS
while (Object.keys(extra).length > 0 && Date.now() < until) {
  await new Promise((resolve) => setTimeout(resolve, 20))
  extra = extraOver(base, counts())
}
if (Object.keys(extra).length > 0) {
  // The first case after which the surplus was there and stayed to the end.
  let suspect = current
  for (let k = after.length - 1; k >= 0; k--) {
    const [index, seen] = after[k]!
    if (Object.entries(extra).every(([name, n]) => (seen.get(name) ?? 0) - (base.get(name) ?? 0) >= n)) suspect = index
    else break
  }
  send({ t: 'leak-handles', i: suspect, extra })
  send({ t: 'end' })
  // Reported: waiting to be killed for what holds the process open would say nothing new.
  process.exit(0)
}
send({ t: 'end' })
