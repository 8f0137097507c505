/**
 * Crash and resume, for real: a child process runs processFile with a stateful guest, the test
 * SIGKILLs it at spread-out moments, runs it again until it completes, and compares the output
 * byte for byte with an uninterrupted run.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { processFile, type Isolation } from '../lib/index.js'
import { example, numbererRef, wcRef } from './helpers/reference.js'
import { randomLines } from './helpers/streams.js'

const CHILD = fileURLToPath(new URL('./children/process-file.js', import.meta.url))
const EVERY = 256 * 1024

interface ChildResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  ms: number
}

function runChild(args: string[], killAfterMs?: number): Promise<ChildResult> {
  return new Promise((resolve) => {
    const started = performance.now()
    const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
    let stdout = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d))
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs)
    const guard = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      clearTimeout(guard)
      resolve({ code, signal, stdout, ms: performance.now() - started })
    })
  })
}

describe('crash and resume (processFile)', () => {
  let work: string
  let input: string
  let inputBytes: Buffer
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'wasm-sandbox-resume-'))
    input = join(work, 'input.txt')
    inputBytes = randomLines(24 * 1024 * 1024, 1234)
    writeFileSync(input, inputBytes)
  })
  after(() => rmSync(work, { recursive: true, force: true }))

  const cases: { guest: string; ref: (b: Buffer) => Buffer; isolation: Isolation; kills: number }[] = [
    { guest: 'numberer', ref: numbererRef, isolation: 'worker', kills: 12 },
    { guest: 'wc', ref: wcRef, isolation: 'worker', kills: 5 },
    { guest: 'numberer', ref: numbererRef, isolation: 'inline', kills: 5 },
  ]
  for (const { guest, ref, isolation, kills } of cases) {
    it(`${guest} (${isolation}): killed at ${kills} points, resumed, output identical to an uninterrupted run`, async (t) => {
      const expected = ref(inputBytes)
      // How long an uninterrupted run takes, to spread the kills over it.
      const cleanOut = join(work, `${guest}-${isolation}-clean.out`)
      const clean = await runChild([input, cleanOut, join(work, `${guest}-${isolation}-clean.ck`), guest, isolation, String(EVERY)])
      assert.equal(clean.code, 0)
      assert.ok(readFileSync(cleanOut).equals(expected), 'the uninterrupted run matches the reference')
      const span = clean.ms

      let resumed = 0
      for (let k = 0; k < kills; k++) {
        const out = join(work, `${guest}-${isolation}-${k}.out`)
        const dir = join(work, `${guest}-${isolation}-${k}.ck`)
        const args = [input, out, dir, guest, isolation, String(EVERY)]
        // Kill once somewhere in the run (spread over it), half the time kill the resumed run too, then finish.
        const first = await runChild(args, span * (0.25 + (0.7 * k) / kills))
        if (k % 2 === 1) await runChild(args, span * 0.4)
        const interrupted = first.signal === 'SIGKILL'
        const checkpointLeft = existsSync(dir) && readdirSync(dir).some((f) => f.endsWith('.wsck'))
        const last = await runChild(args)
        assert.equal(last.code, 0, 'the final run completed')
        const result = JSON.parse(last.stdout) as { resumedFrom: number | null }
        if (checkpointLeft) {
          assert.notEqual(result.resumedFrom, null, 'a checkpoint was left, so the run resumed from it')
          if (interrupted) resumed++
        }
        assert.ok(readFileSync(out).equals(expected), `kill point ${k}: output differs from the uninterrupted run`)
        assert.ok(!existsSync(dir) || readdirSync(dir).every((f) => !f.endsWith('.wsck')), 'checkpoints are removed on success')
      }
      t.diagnostic(`${resumed} of ${kills} kills interrupted a run that then resumed from a checkpoint (uninterrupted run ${Math.round(span)} ms)`)
      assert.ok(resumed >= kills / 2, `only ${resumed} of ${kills} kills hit a run with a checkpoint: the test would not test resuming`)
    })
  }

  it('a kill during a checkpoint write leaves a usable checkpoint set', async () => {
    const out = join(work, 'kill-in-save.out')
    const dir = join(work, 'kill-in-save.ck')
    const killed = await runChild([input, out, dir, 'numberer', 'worker', String(EVERY), '5'])
    assert.equal(killed.signal, 'SIGKILL')
    const last = await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)])
    assert.equal(last.code, 0)
    assert.notEqual(JSON.parse(last.stdout).resumedFrom, null)
    assert.ok(readFileSync(out).equals(numbererRef(inputBytes)))
  })

  it('a corrupt latest checkpoint is skipped for the previous one', async () => {
    const out = join(work, 'corrupt.out')
    const dir = join(work, 'corrupt.ck')
    const clean = await runChild([input, join(work, 'corrupt-clean.out'), join(work, 'corrupt-clean.ck'), 'numberer', 'worker', String(EVERY)])
    await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)], clean.ms * 0.7)
    const files = readdirSync(dir).filter((f) => f.endsWith('.wsck')).sort()
    assert.ok(files.length >= 2, `need two checkpoints, have ${files.length}`)
    const newest = join(dir, files.at(-1)!)
    const bytes = readFileSync(newest)
    bytes[bytes.length >> 1] ^= 0xff
    writeFileSync(newest, bytes)
    const last = await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)])
    assert.equal(last.code, 0)
    assert.ok(readFileSync(out).equals(numbererRef(inputBytes)))
  })

  it('a checkpoint from another module is refused', async () => {
    const out = join(work, 'other.out')
    const dir = join(work, 'other.ck')
    const clean = await runChild([input, join(work, 'other-clean.out'), join(work, 'other-clean.ck'), 'numberer', 'worker', String(EVERY)])
    await runChild([input, out, dir, 'numberer', 'worker', String(EVERY)], clean.ms * 0.7)
    await assert.rejects(
      processFile(input, out, example('wc.wasm'), { bufferSize: 16 * 1024, checkpoint: { dir, every: EVERY } }),
      { code: 'ERR_WASM_CHECKPOINT_MISMATCH' },
    )
  })
})
