/**
 * User code called by the stream (event listeners, checkpoint.commit, storage.save, processFile's
 * onSave) that throws or rejects must fail the stream with that error, once: never escape as an
 * uncaught exception or unhandled rejection, never leave the stream hanging.
 */
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable, type Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it } from 'node:test'
import { BackpressureGate, MemoryCheckpointStorage, processFile, wasmTransform, type Isolation, type SandboxOptions } from '../lib/index.js'
import { example, numbererRef } from './helpers/reference.js'
import { collector, delay, randomLines, sourceOf } from './helpers/streams.js'
import { tempDir } from './helpers/temp.js'

const TIMEOUT = { timeout: 20_000 }

class UserError extends Error {
  constructor() {
    super('thrown by user code')
  }
}

/**
 * Pipes `input` through `stream` into `sink` and reports what the stream emitted, after its
 * 'close' and a pause long enough for a second 'error' or 'close' to show up.
 */
async function failureOf(stream: Duplex, input: Buffer, sink: Writable = collector(), sizes = [4096]) {
  const seen = { error: 0, end: 0, close: 0, errors: [] as unknown[] }
  stream.on('error', (err) => {
    seen.error++
    seen.errors.push(err)
  })
  stream.on('end', () => seen.end++)
  const closed = new Promise<void>((resolve) =>
    stream.on('close', () => {
      seen.close++
      resolve()
    }),
  )
  const rejection = await pipeline(sourceOf(input, sizes), stream, sink).then(
    () => assert.fail('the pipeline succeeded'),
    (err: unknown) => err,
  )
  await closed
  await delay(50)
  return { ...seen, rejection }
}

function assertFailedOnce(seen: Awaited<ReturnType<typeof failureOf>>, check: (err: unknown) => void): void {
  assert.equal(seen.error, 1, "'error' once")
  assert.equal(seen.end, 0, "'end' never")
  assert.equal(seen.close, 1, "'close' once")
  check(seen.errors[0])
  assert.equal(seen.rejection, seen.errors[0], 'the pipeline rejects with the same error')
}

function slowSink(): Writable {
  return new Writable({
    highWaterMark: 1024,
    write(_chunk: Buffer, _enc, cb) {
      setTimeout(cb, 1)
    },
  })
}

function checkpointed(isolation: Isolation, checkpoint: Partial<NonNullable<SandboxOptions['checkpoint']>> = {}): SandboxOptions {
  return { isolation, bufferSize: 1024, checkpoint: { storage: new MemoryCheckpointStorage(), every: 1024, ...checkpoint } }
}

function checkpointFailedBy(cause: UserError): (err: unknown) => void {
  return (err) => {
    assert.equal((err as { code?: string }).code, 'ERR_WASM_CHECKPOINT_FAILED')
    assert.equal((err as Error).cause, cause, "the user's error is the cause")
  }
}

for (const isolation of ['inline', 'worker'] as Isolation[]) {
  describe(`user callbacks that throw fail the stream (${isolation})`, () => {
    it("a 'checkpoint' listener on the stream that throws: the stream fails with its error", TIMEOUT, async () => {
      const boom = new UserError()
      const stream = wasmTransform(example('pass.wasm'), checkpointed(isolation))
      let calls = 0
      stream.on('checkpoint', () => {
        calls++
        throw boom
      })
      const seen = await failureOf(stream, randomLines(64 * 1024))
      assertFailedOnce(seen, (err) => assert.equal(err, boom))
      assert.equal(calls, 1, 'no checkpoint is reported after the stream failed')
    })

    it('checkpoint.commit that throws synchronously: ERR_WASM_CHECKPOINT_FAILED caused by its error', TIMEOUT, async () => {
      const boom = new UserError()
      const stream = wasmTransform(
        example('pass.wasm'),
        checkpointed(isolation, {
          commit: () => {
            throw boom
          },
        }),
      )
      assertFailedOnce(await failureOf(stream, randomLines(64 * 1024)), checkpointFailedBy(boom))
    })

    it('checkpoint.commit that rejects: ERR_WASM_CHECKPOINT_FAILED caused by its error', TIMEOUT, async () => {
      const boom = new UserError()
      const stream = wasmTransform(example('pass.wasm'), checkpointed(isolation, { commit: () => Promise.reject(boom) }))
      assertFailedOnce(await failureOf(stream, randomLines(64 * 1024)), checkpointFailedBy(boom))
    })

    it('storage.save that throws synchronously: ERR_WASM_CHECKPOINT_FAILED caused by its error', TIMEOUT, async () => {
      const boom = new UserError()
      const storage = new MemoryCheckpointStorage()
      storage.save = () => {
        throw boom
      }
      const stream = wasmTransform(example('pass.wasm'), { isolation, bufferSize: 1024, checkpoint: { storage, every: 1024 } })
      assertFailedOnce(await failureOf(stream, randomLines(64 * 1024)), checkpointFailedBy(boom))
    })

    it("a 'drop' listener on the stream that throws: the stream fails with its error", TIMEOUT, async () => {
      const boom = new UserError()
      const stream = wasmTransform(example('pass.wasm'), {
        isolation,
        bufferSize: 1024,
        delimiter: '\n',
        backpressure: 'drop',
        flowControl: { highWaterMark: 4096 },
      })
      let calls = 0
      stream.on('drop', () => {
        calls++
        throw boom
      })
      const seen = await failureOf(stream, Buffer.from('0123456789abcdef\n'.repeat(64 * 1024)), slowSink())
      assertFailedOnce(seen, (err) => assert.equal(err, boom))
      assert.equal(calls, 1, 'no drop is reported after the stream failed')
    })

    it('processFile with a checkpoint.onSave that throws rejects with its error', TIMEOUT, async (t) => {
      const dir = tempDir(t, 'wasm-sandbox-onsave-')
      const input = join(dir, 'in.txt')
      writeFileSync(input, randomLines(64 * 1024))
      const boom = new UserError()
      let calls = 0
      await assert.rejects(
        processFile(input, join(dir, 'out.txt'), example('numberer.wasm'), {
          isolation,
          bufferSize: 1024,
          checkpoint: {
            dir: join(dir, 'checkpoints'),
            every: 1024,
            onSave: () => {
              calls++
              throw boom
            },
          },
        }),
        (err) => err === boom,
      )
      assert.equal(calls, 1)
    })
  })
}

describe('processFile: checkpoint storage methods that throw', () => {
  /** A memory storage whose `method` throws `boom` synchronously, or returns it rejected. */
  function failing(method: 'loadLatest' | 'prune', boom: UserError, how: 'throws' | 'rejects'): MemoryCheckpointStorage {
    const storage = new MemoryCheckpointStorage()
    ;(storage as unknown as Record<string, () => Promise<never>>)[method] = () => {
      if (how === 'throws') throw boom
      return Promise.reject(boom)
    }
    return storage
  }

  for (const how of ['throws', 'rejects'] as const) {
    it(`loadLatest that ${how}: ERR_WASM_CHECKPOINT_FAILED caused by its error, naming it, the output not touched`, TIMEOUT, async (t) => {
      const dir = tempDir(t, 'wasm-sandbox-storage-')
      const input = join(dir, 'in.txt')
      writeFileSync(input, randomLines(16 * 1024))
      const boom = new UserError()
      await assert.rejects(
        processFile(input, join(dir, 'out.txt'), example('numberer.wasm'), {
          bufferSize: 1024,
          checkpoint: { dir: join(dir, 'checkpoints'), storage: failing('loadLatest', boom, how) },
        }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_WASM_CHECKPOINT_FAILED', err.stack)
          assert.equal(err.cause, boom, "the user's error is the cause")
          assert.match(err.message, /MemoryCheckpointStorage\.loadLatest\(\) failed: thrown by user code\. The output was not touched/)
          return true
        },
      )
      assert.equal(existsSync(join(dir, 'out.txt')), false, 'no output file was created')
    })

    it(`prune that ${how} once the run is done: ERR_WASM_CHECKPOINT_FAILED caused by its error, the output complete`, TIMEOUT, async (t) => {
      const dir = tempDir(t, 'wasm-sandbox-storage-')
      const input = join(dir, 'in.txt')
      const bytes = randomLines(16 * 1024)
      writeFileSync(input, bytes)
      const boom = new UserError()
      await assert.rejects(
        processFile(input, join(dir, 'out.txt'), example('numberer.wasm'), {
          bufferSize: 1024,
          checkpoint: { dir: join(dir, 'checkpoints'), every: 1024, storage: failing('prune', boom, how) },
        }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_WASM_CHECKPOINT_FAILED', err.stack)
          assert.equal(err.cause, boom, "the user's error is the cause")
          assert.match(err.message, /MemoryCheckpointStorage\.prune\(\) failed: thrown by user code\. The output is complete/)
          return true
        },
      )
      assert.ok(readFileSync(join(dir, 'out.txt')).equals(numbererRef(bytes)), 'the output is whole')
    })
  }

  it('a storage without the CheckpointStorage methods is refused as an option before anything is done', TIMEOUT, async (t) => {
    const dir = tempDir(t, 'wasm-sandbox-storage-')
    const input = join(dir, 'in.txt')
    writeFileSync(input, 'x\n')
    await assert.rejects(
      processFile(input, join(dir, 'out.txt'), example('numberer.wasm'), {
        checkpoint: { dir: join(dir, 'checkpoints'), storage: { save: async () => {} } as never },
      }),
      { code: 'ERR_WASM_INVALID_OPTION', message: /checkpoint\.storage must implement save, loadLatest, list and prune/ },
    )
    assert.equal(existsSync(join(dir, 'out.txt')), false)
  })
})

describe('BackpressureGate', () => {
  // Written to directly, so the listener's throw would reach the writer (here the source's
  // 'data' handler: an uncaught exception) rather than a stage upstream that happens to catch it.
  it("a 'drop' listener that throws fails the gate with its error", TIMEOUT, async () => {
    const boom = new UserError()
    const gate = new BackpressureGate({ strategy: 'drop', highWaterMark: 1024, flowControl: { highWaterMark: 4096 } })
    let calls = 0
    gate.on('drop', () => {
      calls++
      throw boom
    })
    const seen = await failureOf(gate as unknown as Duplex, randomLines(256 * 1024), slowSink(), [1024])
    assertFailedOnce(seen, (err) => assert.equal(err, boom))
    assert.equal(calls, 1, 'no drop is reported after the gate failed')
  })
})
