/**
 * `npm run soak [-- --cases N] [--seed S] [--batch B] [--from I] [--quick] [--out DIR] [--log FILE]`
 * `npm run soak -- --replay soak-failures/seed1-case42-hang`
 *
 * Runs N seeded cases (default 10,000; `--quick`: 300) of damaged and intact guests, random
 * inputs, splits and options, B cases per child process (default 100), and prints what came out:
 * outputs, typed errors by code, and the five failure counts (crashes, hangs, errors that are
 * not a WasmSandboxError, leaked workers, leaked handles). Exits 1 if any failure count is not
 * zero; each failure leaves a reproducer in DIR (default soak-failures/) and a line to replay it.
 * `--log FILE`: every case's outcome, one JSON line each.
 */
import { openSync, writeSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { runSoak } from './runner.js'
import { formatSummary } from './summary.js'

const { values } = parseArgs({
  options: {
    cases: { type: 'string' },
    seed: { type: 'string', default: '1' },
    batch: { type: 'string', default: '100' },
    from: { type: 'string', default: '0' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string', default: 'soak-failures' },
    log: { type: 'string' },
    replay: { type: 'string', multiple: true },
    inject: { type: 'string', multiple: true },
  },
})

function whole(name: string, text: string, min: number): number {
  const n = Number(text)
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`soak: --${name} must be a whole number of at least ${min}, got ${text}\n`)
    process.exit(2)
  }
  return n
}

const cases = whole('cases', values.cases ?? (values.quick ? '300' : '10000'), 1)
const seed = whole('seed', values.seed!, 0)
const batch = whole('batch', values.batch!, 1)
const from = whole('from', values.from!, 0)

const what = values.replay ? `${values.replay.length} reproducer(s)` : `${cases} cases from ${from}, seed ${seed}, ${batch} per process`
process.stderr.write(`soak: ${what}\n`)
const tty = process.stderr.isTTY
const log = values.log === undefined ? undefined : openSync(values.log, 'w')
const summary = await runSoak({
  seed,
  cases,
  from,
  batch,
  outDir: values.out!,
  ...(values.replay && { replay: values.replay }),
  ...(values.inject && { inject: values.inject }),
  onCase: (done, event) => {
    if (log !== undefined) writeSync(log, JSON.stringify(event) + '\n')
    if (tty) process.stderr.write(`\r${done} / ${values.replay ? values.replay.length : cases}`)
    else if (done % 500 === 0) process.stderr.write(`${done} cases\n`)
  },
})
if (tty) process.stderr.write('\n')
process.stdout.write(formatSummary(summary) + '\n')
process.exitCode = summary.failures.length > 0 ? 1 : 0
