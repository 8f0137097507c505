/**
 * The soak (soak/, `npm run soak`) in small: a few hundred seeded cases of damaged and intact
 * guests, random inputs, splits and options, in child processes, must give no crash, hang,
 * untyped error or leak. Then the soak's own detectors: each kind of failure, injected on
 * purpose, is counted once, pinned on its case, and leaves a reproducer that replays.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { runSoak } from '../soak/runner.js'
import { formatSummary } from '../soak/summary.js'

const out = mkdtempSync(join(tmpdir(), 'soak-test-'))
after(() => rmSync(out, { recursive: true, force: true }))

describe('soak', () => {
  it('240 seeded cases: no crash, hang, untyped error, leaked worker or leaked handle', async (t) => {
    const summary = await runSoak({ seed: 12, cases: 240, batch: 80, outDir: join(out, 'clean') })
    t.diagnostic(formatSummary(summary).replaceAll('\n', ' | '))
    assert.equal(summary.cases, 240)
    assert.deepEqual(summary.counts, { crash: 0, hang: 0, untyped: 0, 'leaked-worker': 0, 'leaked-handle': 0 }, formatSummary(summary))
    // Neither all refused nor all run: guest code ran, and damage was caught, in several ways.
    assert.ok(summary.ok >= 30, `only ${summary.ok} cases produced output`)
    assert.ok(Object.keys(summary.typed).length >= 6, `typed errors: ${JSON.stringify(summary.typed)}`)
  })

  it('counts each injected failure once, on its case, with a reproducer that replays', async () => {
    const dir = join(out, 'injected')
    const summary = await runSoak({
      seed: 3,
      cases: 10,
      batch: 10,
      outDir: dir,
      watchdogMarginMs: 1000,
      inject: ['crash@1', 'hang@3', 'block@4', 'untyped@5', 'leak-worker@6', 'leak-handle@8'],
    })
    assert.equal(summary.cases, 10)
    assert.deepEqual(summary.counts, { crash: 1, hang: 2, untyped: 1, 'leaked-worker': 1, 'leaked-handle': 1 }, formatSummary(summary))
    const pinned = summary.failures.map((f) => `${f.kind}@${f.index}`).sort()
    assert.deepEqual(pinned, ['crash@1', 'hang@3', 'hang@4', 'leaked-handle@8', 'leaked-worker@6', 'untyped@5'])
    for (const failure of summary.failures) {
      for (const file of ['module.wasm', 'input.bin', 'case.json']) assert.ok(existsSync(join(failure.dir, file)), `${failure.dir}/${file}`)
    }
    const crash = summary.failures.find((f) => f.kind === 'crash')!
    assert.match(crash.detail, /SIGSEGV/)
    const meta = JSON.parse(readFileSync(join(crash.dir, 'case.json'), 'utf8')) as { index: number; replay: string }
    assert.equal(meta.index, 1)
    assert.match(meta.replay, /^npm run soak -- --replay /)

    // Replayed from its files (without the injection), the case runs as it really does.
    const replay = await runSoak({ seed: 0, cases: 0, batch: 1, outDir: join(out, 'replayed'), replay: [crash.dir] })
    assert.equal(replay.cases, 1)
    assert.equal(replay.failures.length, 0, formatSummary(replay))
  })
})
