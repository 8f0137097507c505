/**
 * ABI v1.1 (docs/abi.md#abi-v11): configuration, the log channel and trap backtraces, inline
 * and in a worker, with the failure paths (bad ranges, floods, a throwing listener).
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { format } from 'node:util'
import { describe, it } from 'node:test'
import createDebug from 'debug'
import wabtInit from 'wabt'
import { readFunctionNames } from '../lib/guest/binary.js'
import {
  createSandbox,
  loadGuest,
  LOG_LIMITS,
  MAX_GUEST_CONFIG,
  MemoryCheckpointStorage,
  outputOptionsHash,
  resolveOptions,
  wasmTransform,
  type GuestLogEntry,
  type Isolation,
  type SandboxOptions,
  type WasmSandboxError,
} from '../lib/index.js'
import { example, fixture, readFixture } from './helpers/reference.js'
import { run } from './helpers/streams.js'

const isolations: Isolation[] = ['inline', 'worker']
const wabt = await wabtInit()

function wat(text: string, names = false): Uint8Array {
  const m = wabt.parseWat('test.wat', text)
  try {
    m.resolveNames()
    m.validate()
    return new Uint8Array(m.toBinary({ write_debug_names: names }).buffer)
  } finally {
    m.destroy()
  }
}

const GUEST_BODY = `
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "process_chunk") (param i32 i32) (result i32) (i32.const 0))`

describe('ABI v1.1 imports at load', () => {
  it('a guest importing all three with the right types loads, from bytes and precompiled', async () => {
    const bytes = wat(`(module
      (import "sandbox" "config_size" (func (result i32)))
      (import "sandbox" "config_read" (func (param i32 i32) (result i32)))
      (import "sandbox" "log" (func (param i32 i32 i32)))
      ${GUEST_BODY})`)
    assert.equal((await loadGuest(bytes)).abi.kind, 'abi-v1')
    assert.equal((await loadGuest(new WebAssembly.Module(bytes))).abi.kind, 'abi-v1')
  })

  for (const [imp, what] of [
    ['(import "sandbox" "log" (func (param i32 i32 i32) (result i32)))', 'sandbox.log as a function (i32, i32, i32) -> (i32)'],
    ['(import "sandbox" "config_size" (func (param i32) (result i32)))', 'sandbox.config_size as a function (i32) -> (i32)'],
    ['(import "sandbox" "config_read" (func (param i32 i32)))', 'sandbox.config_read as a function (i32, i32) -> ()'],
    ['(import "env" "log" (func (param i32 i32 i32)))', 'env.log'],
    ['(import "sandbox" "config" (func (result i32)))', 'sandbox.config'],
  ] as const) {
    it(`refuses ${what}`, async () => {
      await assert.rejects(loadGuest(wat(`(module ${imp} ${GUEST_BODY})`)), (err: WasmSandboxError) => {
        assert.equal(err.code, 'ERR_WASM_UNKNOWN_IMPORT')
        assert.ok(err.message.includes(what), err.message)
        return true
      })
    })
  }
})

describe('readFunctionNames', () => {
  const bytes = wat(
    `(module (import "sandbox" "emit" (func $emit (param i32 i32))) (func $first) (func) (func $third_function_name))`,
    true,
  )
  const section = new Uint8Array(WebAssembly.Module.customSections(new WebAssembly.Module(bytes), 'name')[0]!)

  it('maps function indices (imports first) to names; unnamed functions have none', () => {
    assert.deepEqual([...readFunctionNames(section)], [
      [0, 'emit'],
      [1, 'first'],
      [3, 'third_function_name'],
    ])
  })

  it('a section cut anywhere, or with its bytes flipped, gives a subset of the names and never throws', () => {
    const full = readFunctionNames(section)
    for (let cut = 0; cut < section.length; cut++) {
      for (const [index, name] of readFunctionNames(section.subarray(0, cut))) assert.equal(full.get(index), name)
    }
    for (let i = 0; i < section.length; i++) {
      const damaged = Uint8Array.from(section)
      damaged[i] ^= 0xff
      assert.doesNotThrow(() => readFunctionNames(damaged))
    }
  })
})

/** Runs `input` through a fresh stream; returns the output, the 'log' entries and the error, if any. */
async function runLogged(
  module: string | Uint8Array | WebAssembly.Module,
  options: SandboxOptions,
  input: Buffer,
  sizes?: number[],
): Promise<{ output: Buffer | undefined; logs: GuestLogEntry[]; err: WasmSandboxError | undefined }> {
  const stream = wasmTransform(module, options)
  const logs: GuestLogEntry[] = []
  stream.on('log', (entry: GuestLogEntry) => logs.push(entry))
  try {
    return { output: await run(stream, input, sizes), logs, err: undefined }
  } catch (err) {
    return { output: undefined, logs, err: err as WasmSandboxError }
  }
}

function u32s(...values: number[]): Buffer {
  const out = Buffer.alloc(4 * values.length)
  values.forEach((v, i) => out.writeUInt32LE(v, 4 * i))
  return out
}

/** What v11-config.wasm outputs: the input, the config, three u32s, the 2-byte prefix. */
function configEcho(input: Buffer, config: Buffer): Buffer {
  const prefix = config.subarray(0, 2)
  return Buffer.concat([input, config, u32s(config.length, config.length, prefix.length), prefix])
}

for (const isolation of isolations) {
  describe(`ABI v1.1 config (${isolation})`, () => {
    it('the guest reads a string config in init: config_size, a full read, a read shorter than the config', async () => {
      const input = Buffer.from('some input\n')
      const { output, err } = await runLogged(fixture('v11-config.wasm'), { isolation, guestConfig: 'pattern=é' }, input)
      assert.equal(err, undefined)
      assert.deepEqual(output, configEcho(input, Buffer.from('pattern=é')))
    })

    it('binary config bytes arrive as given; a 1-byte config makes the 2-byte read return 1', async () => {
      const config = Buffer.from([0, 255, 10, 0, 7])
      const one = Buffer.from([0x80])
      assert.deepEqual((await runLogged(fixture('v11-config.wasm'), { isolation, guestConfig: config }, Buffer.from('x'))).output, configEcho(Buffer.from('x'), config))
      assert.deepEqual((await runLogged(fixture('v11-config.wasm'), { isolation, guestConfig: one }, Buffer.from('x'))).output, configEcho(Buffer.from('x'), one))
    })

    it('without guestConfig, config_size is 0 and config_read copies nothing', async () => {
      const { output } = await runLogged(fixture('v11-config.wasm'), { isolation }, Buffer.from('abc'))
      assert.deepEqual(output, Buffer.concat([Buffer.from('abc'), u32s(0, 0, 0)]))
    })

    it('the config is copied when the stream is made: changing the caller\'s buffer afterwards changes nothing', async () => {
      const config = Buffer.from('before')
      const stream = wasmTransform(fixture('v11-config.wasm'), { isolation, guestConfig: config })
      config.write('AFTER!')
      assert.deepEqual(await run(stream, Buffer.from('-')), configEcho(Buffer.from('-'), Buffer.from('before')))
    })

    it('a config larger than the guest accepts fails init with the guest\'s message', async () => {
      const { err } = await runLogged(fixture('v11-config.wasm'), { isolation, guestConfig: Buffer.alloc(61441) }, Buffer.from('x'))
      assert.equal(err?.code, 'ERR_WASM_GUEST_ERROR')
      assert.equal(err?.exportName, 'init')
      assert.match(err!.message, /config too large/)
    })

    for (const [first, what] of [
      ['a', 'a range crossing the end of memory'],
      ['b', 'a negative length'],
      ['c', 'a range that wraps past 4 GiB'],
    ] as const) {
      it(`config_read with ${what} fails the stream with ERR_WASM_OUT_OF_BOUNDS at that chunk's offset`, async () => {
        const input = Buffer.from(`ok\n${first}\n`)
        const { err } = await runLogged(fixture('v11-config-oob.wasm'), { isolation, guestConfig: 'cfg', delimiter: '\n', bufferSize: 4, maxLatency: Infinity }, input)
        assert.equal(err?.code, 'ERR_WASM_OUT_OF_BOUNDS')
        assert.equal(err?.offset, 3)
        assert.match(err!.message, /config_read range/)
      })
    }

    it('a v1 guest ignores a config it never reads', async () => {
      const { output } = await runLogged(example('upper.wasm'), { isolation, guestConfig: 'unused' }, Buffer.from('abc'))
      assert.deepEqual(output, Buffer.from('ABC'))
    })

    it('sandbox.call passes the config too', async () => {
      const out = await createSandbox({ isolation, guestConfig: 'cfg' }).call(fixture('v11-config.wasm'), 'in')
      assert.deepEqual(out, configEcho(Buffer.from('in'), Buffer.from('cfg')))
    })
  })
}

describe('ABI v1.1 config: options and checkpoints', () => {
  it('guestConfig must be a string or Uint8Array of at most 1 MiB', () => {
    for (const bad of [42, null, { a: 1 }, [1, 2]]) {
      assert.throws(() => resolveOptions({ guestConfig: bad as never }), { code: 'ERR_WASM_INVALID_OPTION' })
    }
    assert.throws(() => resolveOptions({ guestConfig: new Uint8Array(MAX_GUEST_CONFIG + 1) }), { code: 'ERR_WASM_INVALID_OPTION', message: /at most 1048576 bytes/ })
    assert.equal(resolveOptions({ guestConfig: new Uint8Array(MAX_GUEST_CONFIG) }).guestConfig?.length, MAX_GUEST_CONFIG)
    assert.deepEqual(resolveOptions({ guestConfig: 'é' }).guestConfig, new Uint8Array([0xc3, 0xa9]))
  })

  it('a WASI command refuses guestConfig (it has args and env)', async () => {
    const { err } = await runLogged(example('wasi/cat.wasm'), { guestConfig: 'x' }, Buffer.from('x'))
    assert.equal(err?.code, 'ERR_WASM_INVALID_OPTION')
    assert.match(err!.message, /WASI command/)
  })

  it('the options hash is unchanged without a config (old checkpoints still resume) and differs per config', () => {
    const plain = resolveOptions({ bufferSize: 4096 })
    const old = createHash('sha256').update(JSON.stringify({ bufferSize: 4096, delimiter: null, maxRecordSize: plain.maxRecordSize })).digest('hex')
    assert.equal(outputOptionsHash(plain), old)
    const a = outputOptionsHash(resolveOptions({ bufferSize: 4096, guestConfig: 'a' }))
    const b = outputOptionsHash(resolveOptions({ bufferSize: 4096, guestConfig: 'b' }))
    const empty = outputOptionsHash(resolveOptions({ bufferSize: 4096, guestConfig: '' }))
    assert.equal(new Set([old, a, b, empty]).size, 4)
    assert.equal(outputOptionsHash(resolveOptions({ bufferSize: 4096, guestConfig: Buffer.from('a') })), a)
  })

  it('a checkpoint taken under one config resumes under the same config only', async () => {
    const storage = new MemoryCheckpointStorage()
    const options = { bufferSize: 1024, maxLatency: Infinity, guestConfig: 'A', checkpoint: { storage, every: 1024 } } as const
    const input = Buffer.alloc(8 * 1024, 0x61)
    assert.deepEqual(await run(wasmTransform(fixture('v11-config.wasm'), options), input, [1024]), configEcho(input, Buffer.from('A')))
    const latest = await storage.loadLatest()
    assert.ok(latest && latest.inputOffset > 0)
    assert.throws(() => wasmTransform(fixture('v11-config.wasm'), { ...options, checkpoint: undefined, guestConfig: 'B', resumeFrom: latest }), {
      code: 'ERR_WASM_CHECKPOINT_MISMATCH',
      message: /guestConfig/,
    })
    const rest = input.subarray(latest.inputOffset)
    const resumed = await run(wasmTransform(fixture('v11-config.wasm'), { ...options, checkpoint: undefined, resumeFrom: latest }), rest, [1024])
    // The restored guest read its config in the first run's init: it is in the restored memory.
    assert.deepEqual(resumed, configEcho(rest, Buffer.from('A')))
  })
})

const byMessage = (logs: GuestLogEntry[]): string[] => logs.map((l) => `${l.exportName} ${l.offset} ${l.level} ${JSON.stringify(l.message)}`)

for (const isolation of isolations) {
  describe(`ABI v1.1 log (${isolation})`, () => {
    const base = { isolation, delimiter: '\n', maxLatency: Infinity } as const

    it("each message is a 'log' event on the stream with its level, call and input offset; output is unchanged", async () => {
      const input = Buffer.from('hello\n0 err\n1 warn\n3 dbg\n9 high\n- low\n')
      const { output, logs, err } = await runLogged(fixture('v11-log.wasm'), { ...base, bufferSize: 8 }, input)
      assert.equal(err, undefined)
      assert.deepEqual(output, input)
      assert.deepEqual(byMessage(logs), [
        'init 0 info "init"',
        'process_chunk 0 info "hello\\n"',
        'process_chunk 6 error "0 err\\n"',
        'process_chunk 12 warn "1 warn\\n"',
        'process_chunk 19 debug "3 dbg\\n"',
        'process_chunk 25 debug "9 high\\n"',
        'process_chunk 32 error "- low\\n"',
        `flush ${input.length} info "flush"`,
      ])
      assert.ok(logs.every((l) => l.module.endsWith('v11-log.wasm') && l.dropped === undefined && l.truncatedFrom === undefined))
    })

    it(`a flood is cut at ${LOG_LIMITS.messagesPerCall} messages per call and the rest reported once, per call; the stream goes on`, async () => {
      const input = Buffer.from('F1\nok\nF2\n')
      const { output, logs, err } = await runLogged(fixture('v11-log.wasm'), { ...base, bufferSize: 3 }, input)
      assert.equal(err, undefined)
      assert.deepEqual(output, input)
      const inChunk = (offset: number): GuestLogEntry[] => logs.filter((l) => l.exportName === 'process_chunk' && l.offset === offset)
      for (const offset of [0, 6]) {
        const entries = inChunk(offset)
        assert.equal(entries.length, LOG_LIMITS.messagesPerCall + 1)
        assert.ok(entries.slice(0, -1).every((l) => l.level === 'debug' && l.message === input.subarray(offset, offset + 3).toString()))
        const report = entries.at(-1)!
        assert.equal(report.level, 'warn')
        assert.equal(report.dropped, 100000 - LOG_LIMITS.messagesPerCall)
        assert.match(report.message, /99968 log messages were dropped/)
      }
      assert.deepEqual(byMessage(inChunk(3)), ['process_chunk 3 info "ok\\n"'])
    })

    it(`long messages are cut to ${LOG_LIMITS.messageBytes} bytes, at a character boundary, and count against ${LOG_LIMITS.bytesPerCall} bytes per call`, async () => {
      // Byte 1024 of the record is the second byte of "é": the cut steps back before the "é".
      const record = Buffer.concat([Buffer.from('F'), Buffer.alloc(1022, 0x61), Buffer.from('é'), Buffer.alloc(500, 0x62), Buffer.from('\n')])
      const { output, logs } = await runLogged(fixture('v11-log.wasm'), { ...base, bufferSize: 4096 }, record)
      assert.deepEqual(output, record)
      const messages = logs.filter((l) => l.exportName === 'process_chunk')
      const kept = Math.floor(LOG_LIMITS.bytesPerCall / 1023)
      assert.equal(messages.length, kept + 1)
      for (const m of messages.slice(0, -1)) {
        assert.equal(m.message, 'F' + 'a'.repeat(1022))
        assert.equal(m.truncatedFrom, record.length)
      }
      assert.equal(messages.at(-1)!.dropped, 100000 - kept)
    })

    it('a log range outside memory fails the stream with ERR_WASM_OUT_OF_BOUNDS', async () => {
      const { err, logs } = await runLogged(fixture('v11-log.wasm'), { ...base, bufferSize: 3 }, Buffer.from('ok\nX\n'))
      assert.equal(err?.code, 'ERR_WASM_OUT_OF_BOUNDS')
      assert.equal(err?.offset, 3)
      assert.match(err!.message, /log message/)
      assert.deepEqual(byMessage(logs), ['init 0 info "init"', 'process_chunk 0 info "ok\\n"'])
    })

    for (const [call, calls] of [['init', 1], ['process_chunk', 2], ['flush', 5]] as const) {
      it(`a 'log' listener that throws (on a message from ${call}) fails the stream with its own error`, async () => {
        const stream = wasmTransform(fixture('v11-log.wasm'), { ...base, bufferSize: 3 })
        const boom = new Error('listener failed')
        let seen = 0
        stream.on('log', (entry: GuestLogEntry) => {
          seen++
          if (entry.exportName === call) throw boom
        })
        let ended = false
        stream.on('end', () => (ended = true))
        await assert.rejects(run(stream, Buffer.from('ab\ncd\nef\n')), (err) => err === boom)
        assert.equal(seen, calls)
        assert.equal(ended, false)
      })
    }

    it('messages of chunks replayed by recovery are not repeated', async () => {
      const input = Buffer.from('a\nb\nX\nc\n')
      const skipped: WasmSandboxError[] = []
      const stream = wasmTransform(fixture('v11-log.wasm'), { ...base, bufferSize: 2, recoveryStrategy: 'skip' })
      stream.on('chunk-error', (err: WasmSandboxError) => skipped.push(err))
      const logs: GuestLogEntry[] = []
      stream.on('log', (entry: GuestLogEntry) => logs.push(entry))
      assert.deepEqual(await run(stream, input), Buffer.from('a\nb\nc\n'))
      assert.deepEqual(skipped.map((e) => e.code), ['ERR_WASM_OUT_OF_BOUNDS'])
      assert.deepEqual(
        logs.filter((l) => l.exportName === 'process_chunk').map((l) => l.message),
        ['a\n', 'b\n', 'c\n'],
      )
    })
  })
}

describe('ABI v1.1 with a pool (maxConcurrency 3)', () => {
  it('every instance gets the config and every chunk\'s messages arrive, each with its offset', async () => {
    const lines = Array.from({ length: 60 }, (_, i) => `line ${i}\n`)
    const input = Buffer.from(lines.join(''))
    const { output, logs, err } = await runLogged(
      fixture('v11-log.wasm'),
      { maxConcurrency: 3, stateless: true, delimiter: '\n', bufferSize: 8, maxLatency: Infinity, guestConfig: 'unused' },
      input,
    )
    assert.equal(err, undefined)
    assert.deepEqual(output, input)
    const chunks = logs.filter((l) => l.exportName === 'process_chunk')
    let offset = 0
    const expected = lines.map((line) => {
      const at = offset
      offset += line.length
      return `${at} ${line}`
    })
    assert.deepEqual(chunks.map((l) => `${l.offset} ${l.message}`).sort(), expected.sort())
  })

  it('each pooled instance reads the config', async () => {
    const input = Buffer.from('a'.repeat(64))
    const { output, err } = await runLogged(
      fixture('v11-config.wasm'),
      { maxConcurrency: 3, stateless: true, bufferSize: 8, maxLatency: Infinity, guestConfig: 'cfg' },
      input,
      [8],
    )
    assert.equal(err, undefined)
    // The pool flushes each of its instances (1 to 3, as workers were free): each echoes the config it read.
    const echo = configEcho(Buffer.alloc(0), Buffer.from('cfg'))
    assert.deepEqual(output!.subarray(0, 64), input)
    const tail = output!.subarray(64)
    const instances = tail.length / echo.length
    assert.ok(Number.isInteger(instances) && instances >= 1 && instances <= 3, `tail of ${tail.length} bytes`)
    assert.deepEqual(tail, Buffer.concat(Array.from({ length: instances }, () => echo)))
  })
})

describe('ABI v1.1 log: debug', () => {
  it('messages go to the wasm-sandbox:guest debug namespace', async () => {
    const lines: string[] = []
    const saved = { log: createDebug.log, namespaces: createDebug.disable() }
    createDebug.enable('wasm-sandbox:guest')
    createDebug.log = (...args: unknown[]) => void lines.push(format(...args))
    try {
      await run(wasmTransform(fixture('v11-log.wasm'), { isolation: 'worker' }), Buffer.from('2 hi'))
    } finally {
      createDebug.log = saved.log
      createDebug.enable(saved.namespaces)
    }
    assert.equal(lines.length, 3)
    assert.match(lines[1]!, /wasm-sandbox:guest .*v11-log\.wasm process_chunk\(\) at offset 0: info: 2 hi/)
  })
})

for (const isolation of isolations) {
  describe(`ABI v1.1 trap backtraces (${isolation})`, () => {
    it('names each frame from the name section, innermost first, with offsets into the guest\'s own file', async () => {
      const { err } = await runLogged(fixture('trap-names.wasm'), { isolation }, Buffer.from('ab!c'))
      assert.equal(err?.code, 'ERR_WASM_TRAP')
      const frames = err!.backtrace!
      assert.deepEqual(
        frames.map((f) => [f.func, f.name]),
        [
          [2, 'check_byte'],
          [3, undefined],
          [4, 'scan_record'],
          [5, 'process_chunk'],
        ],
      )
      const file = readFixture('trap-names.wasm')
      assert.equal(file[frames[0]!.offset], 0x00, 'the innermost frame points at the unreachable opcode')
      for (const f of frames.slice(1)) assert.equal(file[f.offset], 0x10, 'the outer frames point at their call')
      assert.match(err!.message, /unreachable\nwasm backtrace:\n {4}0: 0x[0-9a-f]+ - check_byte\n {4}1: 0x[0-9a-f]+ - wasm-function\[3\]\n {4}2: 0x[0-9a-f]+ - scan_record\n {4}3: 0x[0-9a-f]+ - process_chunk$/)
    })

    it('without a name section, an exported function is named by its export', async () => {
      const { err } = await runLogged(fixture('unreachable.wasm'), { isolation }, Buffer.from('x'))
      assert.equal(err?.code, 'ERR_WASM_TRAP')
      assert.deepEqual(err!.backtrace!.map((f) => f.name), ['process_chunk'])
      assert.equal(readFixture('unreachable.wasm')[err!.backtrace![0]!.offset], 0x00)
    })

    it('a C guest built with clang -g: config, log, and a trap that names the function', async () => {
      const options = { isolation, guestConfig: 'ERROR', delimiter: '\n', bufferSize: 10, maxLatency: Infinity } as const
      const good = await runLogged(fixture('c/grep-config.wasm'), options, Buffer.from('a ERROR 1\nno\n#0\nERROR 2\n'))
      assert.equal(good.err, undefined)
      assert.deepEqual(good.output, Buffer.from('a ERROR 1\n#ERROR 2\n'))
      assert.deepEqual(good.logs.map((l) => [l.exportName, l.level, l.message]), [
        ['init', 'info', 'pattern: ERROR'],
        ['flush', 'debug', 'matches: 2'],
      ])

      const bad = await runLogged(fixture('c/grep-config.wasm'), options, Buffer.from('a ERROR 1\n#7\n'))
      assert.equal(bad.err?.code, 'ERR_WASM_TRAP')
      assert.equal(bad.err?.offset, 10)
      assert.deepEqual(bad.err!.backtrace!.map((f) => f.name), ['field_byte', 'directive', 'process_chunk'])
      assert.match(bad.err!.message, /memory access out of bounds\nwasm backtrace:\n {4}0: 0x[0-9a-f]+ - field_byte\n/)

      const none = await runLogged(fixture('c/grep-config.wasm'), { ...options, guestConfig: undefined }, Buffer.from('x\n'))
      assert.equal(none.err?.code, 'ERR_WASM_GUEST_ERROR')
      assert.match(none.err!.message, /guestConfig must hold the pattern/)
    })
  })
}

describe('ABI v1.1 trap backtraces: other module sources', () => {
  it('a trap in init fails the start, with its backtrace, in a worker too', async () => {
    const bytes = wat(
      `(module ${GUEST_BODY}
        (func $load_settings (drop (i32.div_u (i32.const 1) (i32.const 0))))
        (func (export "init") (result i32) (call $load_settings) (i32.const 0)))`,
      true,
    )
    for (const isolation of isolations) {
      const { err } = await runLogged(bytes, { isolation }, Buffer.from('x'))
      assert.equal(err?.code, 'ERR_WASM_TRAP')
      assert.equal(err?.exportName, 'init')
      assert.deepEqual(err!.backtrace!.map((f) => f.name), ['load_settings', 'init'])
      assert.match(err!.message, /divide by zero\nwasm backtrace:\n {4}0: 0x[0-9a-f]+ - load_settings\n {4}1: 0x[0-9a-f]+ - init$/)
    }
  })

  it('a precompiled WebAssembly.Module gets names from its name section', async () => {
    const module = new WebAssembly.Module(readFixture('trap-names.wasm'))
    const { err } = await runLogged(module, { isolation: 'inline' }, Buffer.from('!'))
    assert.deepEqual(err!.backtrace!.map((f) => f.name), ['check_byte', undefined, 'scan_record', 'process_chunk'])
  })

  it('a malformed name section neither stops the load nor the trap report', async () => {
    const bytes = readFixture('unreachable.wasm')
    // A custom section "name" whose function-names subsection claims more than it holds.
    const payload = Buffer.from([4, ...Buffer.from('name'), 1, 5, 3, 0, 1, 0x61, 0xff])
    const module = Buffer.concat([bytes, Buffer.from([0, payload.length]), payload])
    const { err } = await runLogged(new Uint8Array(module), { isolation: 'inline' }, Buffer.from('x'))
    assert.equal(err?.code, 'ERR_WASM_TRAP')
    assert.deepEqual(err!.backtrace!.map((f) => f.name), ['process_chunk'])
  })
})
