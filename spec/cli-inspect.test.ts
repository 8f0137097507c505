/**
 * `wasm-sandbox inspect <module>`: what a module is, and why it would be refused, through the
 * built binary. The JSON report is checked field by field; the text report by its lines.
 */
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { wasmSandbox } from './helpers/cli.js'
import { example, fixture, repoRoot } from './helpers/reference.js'
import { tempDir } from './helpers/temp.js'

interface Report {
  kind: string | undefined
  abi: string | undefined
  imports: { module: string; name: string; kind: string; type?: string }[]
  exports: { name: string; kind: string; type?: string }[]
  memory: { source: string; initialPages: number; maximumPages: number | null; limitBytes: number }
  mutableGlobals: number
  stateless: { verdict: string; reason: string; declared: boolean }
  accepted: boolean
  refused?: { code: string; message: string }
}

function inspect(module: string, ...args: string[]): { status: number | null; report: Report; stderr: string } {
  const result = wasmSandbox(['inspect', module, '--json', ...args])
  assert.equal(result.stderr, '', 'nothing on standard error')
  return { status: result.status, report: JSON.parse(result.stdout.toString()) as Report, stderr: result.stderr }
}

describe('inspect: what a module is', () => {
  it('an ABI v1 guest: its imports and exports with signatures, its memory and the cap it gets', () => {
    const { status, report } = inspect(example('upper.wasm'))
    assert.equal(status, 0)
    assert.equal(report.kind, 'abi-v1')
    assert.deepEqual(report.imports, [{ module: 'sandbox', name: 'emit', kind: 'function', type: '(i32, i32) -> ()' }])
    assert.deepEqual(
      report.exports.map((e) => `${e.name}:${e.kind}${e.type ? ` ${e.type}` : ''}`),
      ['memory:memory', 'alloc:function (i32) -> (i32)', 'process_chunk:function (i32, i32) -> (i32)'],
    )
    assert.deepEqual(report.memory, { source: 'exported', initialPages: 2, maximumPages: null, shared: false, limitBytes: 256 * 1024 * 1024 })
    assert.equal(report.accepted, true)
    assert.equal(report.refused, undefined)
  })

  it('an ABI v1.1 guest: one that imports config or log', () => {
    for (const name of ['v11-config.wasm', 'v11-log.wasm']) {
      const { status, report } = inspect(fixture(name))
      assert.equal(status, 0)
      assert.equal(report.abi, 'v1.1', name)
    }
    assert.equal(inspect(example('upper.wasm')).report.abi, 'v1')
    assert.match(wasmSandbox(['inspect', fixture('v11-log.wasm'), '--no-probe']).stdout.toString(), /^kind {7}ABI v1\.1 guest: /m)
  })

  it('a WASI command, and an ABI v1 guest built as a WASI reactor', () => {
    const command = inspect(example('wasi/wc.wasm'))
    assert.equal(command.status, 0)
    assert.equal(command.report.kind, 'wasi-command')
    assert.ok(command.report.exports.some((e) => e.name === '_start'))
    assert.ok(command.report.imports.every((i) => i.module === 'wasi_snapshot_preview1'))
    assert.equal(command.report.stateless.verdict, 'not applicable')
    const reactor = inspect(fixture('wasi-reactor.wasm'))
    assert.equal(reactor.status, 0)
    assert.equal(reactor.report.kind, 'wasi-reactor')
    assert.ok(reactor.report.exports.some((e) => e.name === '_initialize'))
  })

  it('stateless or not, told by running the guest on a probe: pass-through and grep are, a line numberer and wc are not', () => {
    for (const [guest, verdict] of [
      ['upper.wasm', 'yes'],
      ['grep.wasm', 'yes'],
      ['numberer.wasm', 'no'],
      ['wc.wasm', 'no'],
      ['counter-global.wasm', 'no'],
    ] as const) {
      const { report } = inspect(example(guest))
      assert.equal(report.stateless.verdict, verdict, `${guest}: ${report.stateless.reason}`)
    }
  })

  it('a wasm-sandbox.stateless section is reported as declared, and a probe that contradicts it is pointed out', (t) => {
    const dir = tempDir(t, 'cli-inspect-')
    const section = Buffer.concat([Buffer.from([0, 23, 22]), Buffer.from('wasm-sandbox.stateless')])
    writeFileSync(join(dir, 'upper.wasm'), Buffer.concat([readFileSync(example('upper.wasm')), section]))
    writeFileSync(join(dir, 'numberer.wasm'), Buffer.concat([readFileSync(example('numberer.wasm')), section]))
    assert.deepEqual(
      { ...inspect(join(dir, 'upper.wasm')).report.stateless, reason: undefined },
      { verdict: 'yes', declared: true, reason: undefined },
    )
    const liar = wasmSandbox(['inspect', join(dir, 'numberer.wasm')])
    assert.equal(liar.status, 0)
    assert.match(liar.stdout.toString(), /^stateless {2}no: [^\n]*\n {11}declared stateless \(wasm-sandbox\.stateless section\), which the probe contradicts: run it with --no-stateless$/m)
    assert.equal(inspect(example('upper.wasm')).report.stateless.declared, false)
  })

  it('--no-probe reads the module without running it: a guest whose init loops is not started', () => {
    const { status, report } = inspect(fixture('loop-init.wasm'), '--no-probe')
    assert.equal(status, 0)
    assert.equal(report.accepted, true)
    assert.deepEqual(report.stateless, { verdict: 'unknown', reason: 'not probed (--no-probe)', declared: false })
  })

  it('the probe runs in the sandbox: a guest that loops is stopped by the time limit', () => {
    const { status, report } = inspect(fixture('loop-init.wasm'), '--timeout', '300')
    assert.equal(status, 0, 'accepted: it loads; it only fails when run')
    assert.equal(report.stateless.verdict, 'unknown')
    assert.match(report.stateless.reason, /failed on the probe input \(ERR_WASM_TIMEOUT/)
    // In the flags the user typed, not the library's option names.
    assert.match(report.stateless.reason, /--timeout/)
    assert.doesNotMatch(report.stateless.reason, /limits\.timeout/)
  })

  it('the text report: one field a line, the verdict last', () => {
    const result = wasmSandbox(['inspect', example('numberer.wasm')])
    assert.equal(result.status, 0, result.stderr)
    const lines = result.stdout.toString().trimEnd().split('\n')
    assert.match(lines[0]!, /^module {5}\S*numberer\.wasm \(631 B, sha256 [0-9a-f]{16}…\)$/)
    assert.match(lines[1]!, /^kind {7}ABI v1 guest/)
    assert.ok(lines.includes('imports    sandbox.emit: function (i32, i32) -> ()'))
    assert.ok(lines.includes('           sandbox.fail: function (i32, i32) -> ()'))
    assert.ok(lines.some((l) => /^memory {5}exported, 2 pages \(128 KiB\) initially, no maximum declared; capped at 256 MiB/.test(l)))
    assert.ok(lines.some((l) => /^stateless {2}no: /.test(l)))
    assert.equal(lines[lines.length - 1], 'verdict    accepted')
  })
})

describe('inspect: why a module would be refused (exit 1)', () => {
  for (const [name, code, detail] of [
    ['bad-import.wasm', 'ERR_WASM_UNKNOWN_IMPORT', /env\.clock_time_get/],
    ['missing-exports.wasm', 'ERR_WASM_MISSING_EXPORT', /does not export/],
    ['wrong-signature.wasm', 'ERR_WASM_BAD_EXPORT', /needs a function/],
    ['huge-initial-memory.wasm', 'ERR_WASM_MEMORY_LIMIT', /initial memory of 2621440000 bytes/],
    ['not-wasm.txt', 'ERR_WASM_INVALID_MODULE', /bad magic number/],
    ['truncated.wasm', 'ERR_WASM_INVALID_MODULE', /./],
  ] as const) {
    it(`${name}: ${code}`, () => {
      const { status, report } = inspect(fixture(name))
      assert.equal(status, 1)
      assert.equal(report.accepted, false)
      assert.equal(report.refused?.code, code)
      assert.match(report.refused!.message, detail)
      assert.equal(report.stateless.verdict, 'unknown', 'a refused module is never run')
    })
  }

  it('a memory refused at the default cap is accepted under a higher --memory', () => {
    const { status, report } = inspect(fixture('huge-initial-memory.wasm'), '--memory', String(4 * 1024 ** 3), '--no-probe')
    assert.equal(status, 0, report.refused?.message)
    assert.equal(report.memory.initialPages, 40000)
    assert.equal(report.memory.limitBytes, 4 * 1024 ** 3)
  })

  it('the text report says why, in flags', () => {
    const result = wasmSandbox(['inspect', fixture('huge-initial-memory.wasm')])
    assert.equal(result.status, 1)
    const last = result.stdout.toString().trimEnd().split('\n').pop()!
    assert.match(last, /^verdict {4}refused: ERR_WASM_MEMORY_LIMIT: .* over --memory \(268435456 bytes\)/)
  })

  it('a module that cannot be read: exit 1 and the error on standard error', () => {
    const result = wasmSandbox(['inspect', join(repoRoot, 'no-such-guest.wasm')])
    assert.equal(result.status, 1)
    assert.equal(result.stdout.length, 0)
    assert.match(result.stderr, /^wasm-sandbox: ERR_WASM_MODULE_NOT_FOUND: /)
  })

  it('a bad --memory is a usage error', () => {
    const result = wasmSandbox(['inspect', example('upper.wasm'), '--memory', '1000'])
    assert.equal(result.status, 2)
    assert.match(result.stderr, /^wasm-sandbox: --memory must be from 65536/)
  })
})
