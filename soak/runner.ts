/**
 * The soak's parent: runs the cases in batches, each batch in a child process (batch.ts), and
 * counts what went wrong. A child that dies is a crash of the case it was running; one that
 * stops reporting past the case's bound (plus a margin) is killed and the case is a hang; in
 * both, the rest of the batch goes on in a new child. Each failure leaves a reproducer.
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import type { BatchEvent } from './protocol.js'
import { generateCase, type CaseSpec } from './cases.js'
import { readReproducer, writeReproducer } from './reproducer.js'

const BATCH_ENTRY = fileURLToPath(new URL('./batch.js', import.meta.url))
/** Past a case's own bound, how long the parent waits for the child to say anything. */
const WATCHDOG_MARGIN_MS = 5000
/** Between cases (the leak checks) and at start-up, the longest silence that is not a hang. */
const IDLE_BOUND_MS = 20_000
/** After `end`, a child should exit at once: past this it is held open by a leaked handle. */
const EXIT_BOUND_MS = 5000
/** Node's exit status when the event loop empties with a top-level await unsettled. */
const UNSETTLED_EXIT = 13

export type FailureKind = 'crash' | 'hang' | 'untyped' | 'leaked-worker' | 'leaked-handle'
export const FAILURE_KINDS: readonly FailureKind[] = ['crash', 'hang', 'untyped', 'leaked-worker', 'leaked-handle']

export interface Failure {
  kind: FailureKind
  /** The case it is pinned on (a leaked handle: the first case after which it stayed). */
  index: number
  detail: string
  /** Where its reproducer was written. */
  dir: string
}

export interface SoakOptions {
  seed: number
  /** Cases `from` .. `from + cases - 1`. */
  cases: number
  from?: number
  batch: number
  /** Where reproducers go. */
  outDir: string
  /** Instead of generating cases: replay these reproducer directories. */
  replay?: string[]
  /** Test hooks passed to the child: `kind@index`. */
  inject?: string[]
  /** Past a case's bound, how long a silent child is given before it is killed. Default 5000 ms. */
  watchdogMarginMs?: number
  /** Called after each case settles: how many have, and the event (for a progress line, a log). */
  onCase?: (done: number, event: Extract<BatchEvent, { t: 'done' }>) => void
}

export interface SoakSummary {
  cases: number
  ok: number
  typed: Record<string, number>
  failures: Failure[]
  counts: Record<FailureKind, number>
  warnings: string[]
  ms: number
}

interface ChildRun {
  events: BatchEvent[]
  code: number | null
  signal: NodeJS.Signals | null
  /** Why the parent killed it, if it did. */
  killed: 'silent' | 'held-open' | undefined
  stderr: string
}

function runChild(args: string[], margin: number, onEvent: (e: BatchEvent) => void): Promise<ChildRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BATCH_ENTRY, ...args], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] })
    const run: ChildRun = { events: [], code: null, signal: null, killed: undefined, stderr: '' }
    let watchdog: NodeJS.Timeout | undefined
    const arm = (ms: number, why: 'silent' | 'held-open'): void => {
      clearTimeout(watchdog)
      watchdog = setTimeout(() => {
        run.killed = why
        child.kill('SIGKILL')
      }, ms)
    }
    arm(IDLE_BOUND_MS, 'silent')
    child.stderr!.on('data', (chunk: Buffer) => {
      // The end is what says why a process died.
      run.stderr = (run.stderr + chunk.toString()).slice(-8192)
    })
    const lines = createInterface({ input: child.stdio[3] as Readable })
    lines.on('line', (line) => {
      let event: BatchEvent
      try {
        event = JSON.parse(line) as BatchEvent
      } catch {
        return
      }
      run.events.push(event)
      onEvent(event)
      if (event.t === 'start') arm(event.boundMs + margin, 'silent')
      else if (event.t === 'end') arm(EXIT_BOUND_MS, 'held-open')
      else arm(IDLE_BOUND_MS, 'silent')
    })
    let exited = false
    let closed = false
    const finish = (): void => {
      if (!exited || !closed) return
      clearTimeout(watchdog)
      resolve(run)
    }
    lines.on('close', () => {
      closed = true
      finish()
    })
    child.on('exit', (code, signal) => {
      run.code = code
      run.signal = signal
      exited = true
      finish()
    })
  })
}

export async function runSoak(options: SoakOptions): Promise<SoakSummary> {
  const started = Date.now()
  const summary: SoakSummary = {
    cases: 0,
    ok: 0,
    typed: {},
    failures: [],
    counts: { crash: 0, hang: 0, untyped: 0, 'leaked-worker': 0, 'leaked-handle': 0 },
    warnings: [],
    ms: 0,
  }
  // A replayed case comes from its directory, any other from the generator.
  let replaying: string | undefined
  const specOf = (index: number): CaseSpec => (replaying ? readReproducer(replaying) : generateCase(options.seed, index))
  const fail = (kind: FailureKind, index: number, detail: string, stderr = ''): void => {
    summary.counts[kind]++
    const spec = specOf(index)
    const dir = join(options.outDir, `seed${spec.seed}-case${spec.index}-${kind}`)
    writeReproducer(dir, spec, { kind, detail }, stderr)
    summary.failures.push({ kind, index, detail, dir })
  }

  // Jobs: ranges of generated cases, or one reproducer each.
  const jobs: Array<{ indices: number[]; replay?: string; args: (from: number) => string[] }> = []
  for (const dir of options.replay ?? []) jobs.push({ indices: [readReproducer(dir).index], replay: dir, args: () => ['--replay', dir] })
  if (!options.replay) {
    const first = options.from ?? 0
    for (let from = first; from < first + options.cases; from += options.batch) {
      const to = Math.min(from + options.batch, first + options.cases)
      const indices = Array.from({ length: to - from }, (_, k) => from + k)
      jobs.push({ indices, args: (at) => ['--seed', String(options.seed), '--from', String(at), '--to', String(to)] })
    }
  }
  const injectArgs = (options.inject ?? []).flatMap((s) => ['--inject', s])

  for (const job of jobs) {
    replaying = job.replay
    let next = 0
    while (next < job.indices.length) {
      let running: number | undefined
      let last: number | undefined
      let hangReported: number | undefined
      let ended = false
      let handlesReported = false
      const run = await runChild([...job.args(job.indices[next]!), ...injectArgs], options.watchdogMarginMs ?? WATCHDOG_MARGIN_MS, (e) => {
        switch (e.t) {
          case 'start':
            running = e.i
            break
          case 'done':
            running = undefined
            last = e.i
            summary.cases++
            options.onCase?.(summary.cases, e)
            if (e.outcome.kind === 'ok') summary.ok++
            else if (e.outcome.kind === 'typed') summary.typed[e.outcome.code] = (summary.typed[e.outcome.code] ?? 0) + 1
            else fail('untyped', e.i, `${e.outcome.name}: ${e.outcome.message}\n${e.outcome.stack}`)
            break
          case 'hang':
            hangReported = e.i
            fail('hang', e.i, `no settle within ${e.ms} ms (its bound)`)
            break
          case 'leak-workers':
            fail('leaked-worker', e.i, `${e.busy} worker(s) still ${e.atEnd ? 'alive after the pool was closed at the end of the batch' : 'busy after the case settled'}`)
            break
          case 'leak-handles':
            handlesReported = true
            fail('leaked-handle', e.i, `left at the end of the batch: ${JSON.stringify(e.extra)}`)
            break
          case 'warning':
            summary.warnings.push(`case ${e.i}: ${e.name}: ${e.message}`)
            break
          case 'end':
            ended = true
            break
        }
      })
      const culprit = running ?? last ?? job.indices[next]!
      if (run.killed === 'held-open') {
        // Already counted if the child saw what it left; a process held open by it says nothing new.
        if (!handlesReported) fail('leaked-handle', culprit, `the batch process did not exit within ${EXIT_BOUND_MS} ms of its end: something holds it open`, run.stderr)
      } else if (hangReported !== undefined) {
        // Counted when reported; the case is done.
        summary.cases++
      } else if (run.killed === 'silent' || (run.code === UNSETTLED_EXIT && running !== undefined)) {
        summary.cases += running !== undefined ? 1 : 0
        fail('hang', culprit, run.killed ? 'no report within the case bound plus margin: killed' : 'the event loop emptied with the case unsettled (exit 13)', run.stderr)
      } else if (!ended || run.code !== 0) {
        summary.cases += running !== undefined ? 1 : 0
        const said = run.stderr.trim().split('\n').slice(-12).join('\n')
        fail('crash', culprit, `batch process exited with ${run.signal ? `signal ${run.signal}` : `status ${run.code}`}${running === undefined ? ' between cases' : ''}${said ? `; its stderr ended with:\n${said}` : ''}`, run.stderr)
      }
      if (ended || run.killed === 'held-open') break
      next = job.indices.indexOf(culprit) + 1
      if (next === 0) break
    }
  }
  summary.ms = Date.now() - started
  return summary
}
