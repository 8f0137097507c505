/**
 * The hostile-guest suite: every fixture ends in the right typed error within a bounded time,
 * and the host stays healthy (a fresh pipeline still works afterwards). Each case runs under
 * both isolation modes where the mode can enforce it; inline cannot interrupt a running guest,
 * so the endless loops run in workers only.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  Chunker,
  WasmExecutor,
  WorkerRunner,
  InlineRunner,
  RecoveringRunner,
  type RunnerFactory,
  createSandbox,
  wasmTransform,
  loadGuest,
  type Isolation,
  type SandboxOptions,
  type WasmSandboxError,
  type WasmSandboxErrorCode,
} from '../lib/index.js'
import { example, fixture, readFixture } from './helpers/reference.js'
import { collector, randomBytes, run, sourceOf } from './helpers/streams.js'

const isolations: Isolation[] = ['inline', 'worker']
const PAGE = 65536

async function failure(
  module: string | WebAssembly.Module,
  options: SandboxOptions,
  input: Buffer = Buffer.from('hello'),
  sizes?: number[],
): Promise<{ err: WasmSandboxError; ms: number }> {
  const started = performance.now()
  try {
    await run(wasmTransform(module, options), input, sizes)
  } catch (err) {
    return { err: err as WasmSandboxError, ms: performance.now() - started }
  }
  assert.fail(`${module} was expected to fail`)
}

function assertError(err: WasmSandboxError, code: WasmSandboxErrorCode, exportName?: string): void {
  assert.equal(err.name, 'WasmSandboxError', String(err?.stack ?? err))
  assert.equal(err.code, code, err.message)
  if (exportName) assert.equal(err.exportName, exportName, err.message)
}

/** The host is healthy: a new pipeline in the same process works. */
async function assertHealthy(isolation: Isolation): Promise<void> {
  const input = randomBytes(200_000, 77)
  assert.deepEqual(await run(wasmTransform(example('pass.wasm'), { isolation }), input), input)
}

for (const isolation of isolations) {
  describe(`hostile guests (${isolation})`, () => {
    const base: SandboxOptions = { isolation, limits: { memory: 4 * 1024 * 1024 } }

    it('memory.grow in a loop hits the memory limit, reported as ERR_WASM_MEMORY_LIMIT', async () => {
      const { err } = await failure(fixture('grow-loop.wasm'), base)
      assertError(err, 'ERR_WASM_MEMORY_LIMIT', 'process_chunk')
      assert.match(err.message, /limits\.memory/)
      await assertHealthy(isolation)
    })

    it('a huge initial memory is refused at load', async () => {
      const { err } = await failure(fixture('huge-initial-memory.wasm'), { isolation })
      assertError(err, 'ERR_WASM_MEMORY_LIMIT')
      assert.match(err.message, /initial memory/)
    })

    it('growing memory exactly to the limit works; one page more fails', async () => {
      const limitPages = 8
      const options: SandboxOptions = { isolation, bufferSize: 4, limits: { memory: limitPages * PAGE } }
      const grow = (n: number) => Buffer.from(Int32Array.of(n).buffer)
      // One chunk per grow request: start at 1 page, grow to exactly the limit.
      const ok = await run(wasmTransform(fixture('grow-pages.wasm'), options), grow(limitPages - 1), [4])
      assert.equal(ok.readInt32LE(0), limitPages)
      // Then one page more: memory.grow returns -1 and the guest traps; the user is told it is the limit.
      const { err } = await failure(fixture('grow-pages.wasm'), options, Buffer.concat([grow(limitPages - 1), grow(1)]), [4])
      assertError(err, 'ERR_WASM_MEMORY_LIMIT', 'process_chunk')
      assert.equal(err.offset, 4, 'the second chunk failed')
    })

    it('a precompiled WebAssembly.Module (which cannot be rewritten) is held to the limit after each call', async () => {
      const module = await WebAssembly.compile(readFixture('grow-pages.wasm'))
      const options: SandboxOptions = { isolation, bufferSize: 4, limits: { memory: 8 * PAGE } }
      const grow = (n: number) => Buffer.from(Int32Array.of(n).buffer)
      const ok = await run(wasmTransform(module, options), grow(7), [4])
      assert.equal(ok.readInt32LE(0), 8)
      const { err } = await failure(module as never, options, grow(8), [4])
      assertError(err, 'ERR_WASM_MEMORY_LIMIT', 'process_chunk')
    })

    it("a guest loaded earlier with a looser cap is held to this stream's limit", async () => {
      const loaded = await loadGuest(fixture('grow-pages.wasm'), { memoryLimit: 64 * PAGE })
      const options: SandboxOptions = { isolation, bufferSize: 4, limits: { memory: 8 * PAGE } }
      const grow = (n: number) => Buffer.from(Int32Array.of(n).buffer)
      assert.equal((await run(wasmTransform(loaded, options), grow(7), [4])).readInt32LE(0), 8)
      const { err } = await failure(loaded as never, options, grow(8), [4])
      assertError(err, 'ERR_WASM_MEMORY_LIMIT', 'process_chunk')
    })

    it('emit imported with float parameters: refused at load from bytes, out of bounds when precompiled', async () => {
      assertError((await failure(fixture('emit-float.wasm'), base)).err, 'ERR_WASM_UNKNOWN_IMPORT')
      const module = await WebAssembly.compile(readFixture('emit-float.wasm'))
      assertError((await failure(module, base)).err, 'ERR_WASM_OUT_OF_BOUNDS')
    })

    it('an imported env.memory is created with the capped maximum', async () => {
      const input = randomBytes(10_000)
      const options: SandboxOptions = { isolation, bufferSize: 1024, limits: { memory: 16 * PAGE } }
      assert.deepEqual(await run(wasmTransform(fixture('imported-memory.wasm'), options), input), input)
    })

    for (const name of ['emit-oob', 'emit-negative', 'emit-wrap', 'alloc-oob']) {
      it(`${name}: out-of-bounds pointers are refused`, async () => {
        const { err } = await failure(fixture(`${name}.wasm`), base)
        assertError(err, 'ERR_WASM_OUT_OF_BOUNDS')
      })
    }

    it('an output bomb (1 GiB from one chunk) stops at maxOutputPerChunk', async () => {
      const { err, ms } = await failure(fixture('output-bomb.wasm'), base, Buffer.alloc(1000))
      assertError(err, 'ERR_WASM_OUTPUT_LIMIT', 'process_chunk')
      assert.match(err.message, /maxOutputPerChunk \(1064576 bytes\)/, 'default: 16 × chunk + 1 MiB')
      assert.ok(ms < 5000, `took ${ms} ms`)
      await assertHealthy(isolation)
    })

    it('1 GiB of output in total stops at maxOutput', async () => {
      // 1 MiB per chunk, 1024 chunks: each chunk is within its own cap, the total is not.
      const options: SandboxOptions = { ...base, bufferSize: 1024, limits: { ...base.limits, maxOutput: 32 * 1024 * 1024 } }
      let sent = 0
      const source = new Readable({
        read() {
          this.push(sent++ < 1024 ? Buffer.alloc(1024) : null)
        },
      })
      let received = 0
      const sink = new Writable({
        write(chunk: Buffer, _enc, cb) {
          received += chunk.length
          cb()
        },
      })
      await assert.rejects(pipeline(source, wasmTransform(fixture('emit-1mib.wasm'), options), sink), (err: WasmSandboxError) => {
        assertError(err, 'ERR_WASM_OUTPUT_LIMIT')
        assert.match(err.message, /limits\.maxOutput \(33554432 bytes\)/)
        return true
      })
      assert.ok(received <= 32 * 1024 * 1024, `received ${received} bytes`)
    })

    it('unbounded recursion is a trap (stack overflow), not a crash', async () => {
      const { err } = await failure(fixture('stack-overflow.wasm'), base)
      assertError(err, 'ERR_WASM_TRAP', 'process_chunk')
      await assertHealthy(isolation)
    })

    it('unreachable is a trap', async () => {
      assertError((await failure(fixture('unreachable.wasm'), base)).err, 'ERR_WASM_TRAP')
    })

    it('modules that are broken are refused at load', async () => {
      assertError((await failure(fixture('bad-import.wasm'), base)).err, 'ERR_WASM_UNKNOWN_IMPORT')
      assertError((await failure(fixture('truncated.wasm'), base)).err, 'ERR_WASM_INVALID_MODULE')
      assertError((await failure(fixture('random.bin'), base)).err, 'ERR_WASM_INVALID_MODULE')
      assertError((await failure(fixture('wrong-signature.wasm'), base)).err, 'ERR_WASM_BAD_EXPORT')
    })
  })
}

describe('imports called from the start function', () => {
  for (const isolation of ['inline', 'worker'] as const) {
    it(`sandbox.emit from the start function is a trap that says why (${isolation})`, async () => {
      await assert.rejects(run(wasmTransform(fixture('start-emits.wasm'), { isolation }), Buffer.from('x')), (err: WasmSandboxError) => {
        assertError(err, 'ERR_WASM_TRAP', 'start')
        assert.match(err.message, /cannot be called from the module's start function/)
        return true
      })
    })
  }
})

describe('time limits (worker isolation)', () => {
  const timeout = 300
  const options: SandboxOptions = { isolation: 'worker', limits: { timeout } }

  it('an endless loop in process_chunk is terminated with ERR_WASM_TIMEOUT, measured from when it is running', async (t) => {
    const stream = wasmTransform(fixture('loop-process.wasm'), options)
    let runningAt = 0
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        // The guest's handshake: it emits "running" right before it loops.
        if (chunk.toString() === 'running') runningAt = performance.now()
        cb()
      },
    })
    const input = Buffer.concat([Buffer.alloc(70_000, 1), Buffer.from('x')])
    await assert.rejects(pipeline(sourceOf(input, [65536]), stream, sink), (err: WasmSandboxError) => {
      const margin = performance.now() - runningAt - timeout
      t.diagnostic(`timeout ${timeout} ms; error ${Math.round(margin)} ms after the limit`)
      assert.ok(runningAt > 0, 'the guest was running before it was stopped')
      assertError(err, 'ERR_WASM_TIMEOUT', 'process_chunk')
      assert.equal(err.offset, 0)
      assert.match(err.message, /300 ms time limit/)
      assert.ok(margin > -20 && margin < 250, `stopped ${margin} ms after the limit`)
      return true
    })
    await assertHealthy('worker')
  })

  for (const [name, exportName] of [
    ['loop-init', 'init'],
    ['loop-flush', 'flush'],
    ['loop-start', 'start'],
  ] as const) {
    it(`an endless loop in ${exportName} is terminated with ERR_WASM_TIMEOUT`, async () => {
      const { err, ms } = await failure(fixture(`${name}.wasm`), options)
      assertError(err, 'ERR_WASM_TIMEOUT', exportName)
      assert.ok(ms < timeout + 1000, `took ${ms} ms`)
    })
  }

  it('the stream deadline bounds the whole stream', async () => {
    const { err, ms } = await failure(
      fixture('slow.wasm'),
      { isolation: 'worker', bufferSize: 1, limits: { deadline: 300, timeout: 10_000 } },
      Buffer.alloc(50, 1),
      [1],
    )
    assertError(err, 'ERR_WASM_TIMEOUT')
    assert.match(err.message, /deadline of 300 ms/)
    assert.ok(ms < 1500, `took ${ms} ms`)
  })

  it('the deadline holds inline even when the stream never yields to the event loop', async () => {
    // Readable.from over buffers, an inline guest and a sink that calls back at once run the whole
    // stream in ticks and microtasks: the deadline's timer never got a turn, and 1 s of guest
    // work finished under a 100 ms deadline.
    const stream = wasmTransform(fixture('jitter.wasm'), { isolation: 'inline', bufferSize: 4096, stateless: true, limits: { deadline: 100 } })
    const chunks = Array.from({ length: 200 }, () => Buffer.alloc(4096, 7))
    const started = performance.now()
    const err = await pipeline(Readable.from(chunks), stream, new Writable({ write: (_c, _e, cb) => cb() })).then(
      () => assert.fail('the stream finished past its deadline'),
      (e: WasmSandboxError) => e,
    )
    assertError(err, 'ERR_WASM_TIMEOUT')
    assert.match(err.message, /deadline of 100 ms/)
    assert.ok(performance.now() - started < 600, `took ${performance.now() - started} ms`)
  })

  it("a deadline past Node's longest timer is refused, not fired after 1 ms; Infinity is none", async () => {
    // setTimeout clamps a longer delay to 1 ms: a deadline of 3e9 ms failed every stream at once.
    for (const deadline of [2 ** 31, 3e9]) {
      assert.throws(() => wasmTransform(example('upper.wasm'), { limits: { deadline } }), { code: 'ERR_WASM_INVALID_OPTION', message: /limits\.deadline .*2147483647/ })
    }
    for (const deadline of [2 ** 31 - 1, Infinity]) {
      assert.deepEqual(await run(wasmTransform(example('upper.wasm'), { limits: { deadline } }), Buffer.from('abc'), [1, 2]), Buffer.from('ABC'))
    }
  })

  it('sandbox.call() is time-bounded too', async () => {
    await assert.rejects(createSandbox(options).call(fixture('loop-process.wasm'), 'x'), { code: 'ERR_WASM_TIMEOUT' })
  })

  it('time a slow consumer makes the guest wait does not count against the guest', async () => {
    // emit-many blocks on a full output ring while the consumer sleeps far longer than the limit.
    const stream = wasmTransform(fixture('emit-many.wasm'), { isolation: 'worker', bufferSize: 256, limits: { timeout: 100 } })
    let n = 0
    const sink = new Writable({
      highWaterMark: 1024,
      write(_chunk, _enc, cb) {
        if (++n === 10) setTimeout(cb, 400)
        else cb()
      },
    })
    await pipeline(sourceOf(Buffer.alloc(512, 7), [256]), stream, sink)
    assert.equal(n, 2000)
  })
})

describe('recovery strategies', () => {
  const input = Buffer.from('aaaa' + 'bb!b' + 'cccc' + 'd!dd' + 'eeee')

  for (const isolation of isolations) {
    it(`'skip' drops failing chunks, emits chunk-error with the offset, and carries on (${isolation})`, async () => {
      const stream = wasmTransform(fixture('fail-on-bang.wasm'), { isolation, bufferSize: 4, recoveryStrategy: 'skip' })
      const skipped: number[] = []
      stream.on('chunk-error', (err: WasmSandboxError) => {
        assertError(err, 'ERR_WASM_GUEST_ERROR')
        skipped.push(err.offset!)
      })
      const out = await run(stream, input, [3])
      assert.equal(out.toString(), 'aaaacccceeee')
      assert.deepEqual(skipped, [4, 12])
    })

    it(`maxOutput counts the whole stream, across the fresh instances of 'skip' (${isolation})`, async () => {
      const options: SandboxOptions = { isolation, bufferSize: 4, recoveryStrategy: 'skip', limits: { maxOutput: 8 } }
      const { err } = await failure(fixture('fail-on-bang.wasm'), options, input, [4])
      assertError(err, 'ERR_WASM_OUTPUT_LIMIT')
      assert.equal(err.offset, 16)
    })

    it(`{ retry: n } gives up after n retries, each on a fresh instance (${isolation})`, async () => {
      let restarts = 0
      const executor = new WasmExecutor(fixture('fail-on-bang.wasm'), {
        isolation,
        bufferSize: 4,
        runner: (guest, hooks, options) => {
          const counted: RunnerFactory = (g, h, o) => {
            const runner = isolation === 'inline' ? new InlineRunner(g, h, o) : new WorkerRunner(g, h, o)
            const restart = runner.restart.bind(runner)
            runner.restart = (cb, restore) => {
              restarts++
              restart(cb, restore)
            }
            return runner
          }
          return new RecoveringRunner(counted, guest, hooks, options, { strategy: { retry: 2 }, stateless: false })
        },
      })
      const sink = collector()
      await assert.rejects(pipeline(sourceOf(input, [4]), new Chunker({ bufferSize: 4 }), executor, sink), (err: WasmSandboxError) => {
        assertError(err, 'ERR_WASM_GUEST_ERROR')
        assert.equal(err.offset, 4)
        return true
      })
      assert.equal(restarts, 2)
      assert.equal(sink.result().toString(), 'aaaa', 'the failed chunk produced no output')
    })
  }

  it('a worker killed mid-chunk is ERR_WASM_WORKER_DIED with recovery fail, and is replaced with { retry: 1 }', async () => {
    for (const recoveryStrategy of ['fail', { retry: 1 }] as const) {
      const stream = wasmTransform(fixture('slow.wasm'), { isolation: 'worker', bufferSize: 1, recoveryStrategy })
      type Killable = { worker?: { terminate(): Promise<number> }; inner?: Killable }
      const executor = stream.stages[1] as unknown as { runner: Killable }
      // With recovery the worker runner sits inside a RecoveringRunner.
      const workerOf = (r: Killable): Killable['worker'] => r.worker ?? (r.inner && workerOf(r.inner))
      let killed = false
      const sink = collector()
      const sinkWrite = sink._write.bind(sink)
      sink._write = (chunk, enc, cb) => {
        // After the first output the guest is busy with the next (slow) chunk: kill it there, once.
        if (!killed) {
          killed = true
          // (A stream already over has no runner: the assertions below then say what went wrong.)
          setTimeout(() => void (executor.runner && workerOf(executor.runner))?.terminate(), 20)
        }
        sinkWrite(chunk, enc, cb)
      }
      // The second chunk busy-loops for 300M iterations (a few hundred ms), time enough for the kill on a loaded machine.
      const input = Buffer.from([0, 30, 0, 0])
      const done = pipeline(sourceOf(input, [1]), stream, sink)
      if (recoveryStrategy === 'fail') {
        await assert.rejects(done, (err: WasmSandboxError) => {
          assertError(err, 'ERR_WASM_WORKER_DIED')
          assert.equal(err.offset, 1)
          return true
        })
      } else {
        await done
        assert.deepEqual(sink.result(), input, 'the killed chunk was replayed on a fresh worker')
      }
    }
  })

  it('a worker whose start-up fails is not restarted in a loop', async () => {
    let starts = 0
    const executor = new WasmExecutor(fixture('loop-start.wasm'), {
      limits: { timeout: 200 },
      runner: (guest, hooks, options) => {
        const counted: RunnerFactory = (g, h, o) => {
          const runner = new WorkerRunner(g, h, o)
          const start = runner.start.bind(runner)
          runner.start = (cb, restore) => {
            starts++
            start(cb, restore)
          }
          return runner
        }
        return new RecoveringRunner(counted, guest, hooks, options, { strategy: { retry: 5 }, stateless: false })
      },
    })
    const started = performance.now()
    await assert.rejects(pipeline(sourceOf(Buffer.from('x')), executor, collector()), { code: 'ERR_WASM_TIMEOUT' })
    assert.equal(starts, 1)
    assert.ok(performance.now() - started < 2000)
  })
})
