import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { deflateRawSync } from 'node:zlib'
import fc from 'fast-check'
import { CorruptCheckpointError, decodeCheckpoint, decodeCheckpointInfo, encodeCheckpoint } from '../lib/checkpoint/codec.js'
import { FileCheckpointStorage } from '../lib/checkpoint/file-storage.js'
import { MemoryCheckpointStorage } from '../lib/checkpoint/memory-storage.js'
import type { Checkpoint, CheckpointInfo, CheckpointStorage } from '../lib/checkpoint/types.js'
import { randomBytes } from './helpers/streams.js'

/** Plain Uint8Array (not Buffer), as the codec returns memory. */
const bytesOf = (length: number, seed: number): Uint8Array => new Uint8Array(randomBytes(length, seed))

const dirs: string[] = []
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsck-'))
  dirs.push(dir)
  return dir
}
after(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true })
})

/** Deterministic, so a failure reproduces. */

function makeCheckpoint(sequence: number, memoryBytes = 65536): Checkpoint {
  const memory = new Uint8Array(memoryBytes)
  memory.set(bytesOf(Math.min(2048, memoryBytes), sequence), 0)
  if (memoryBytes > 8192) memory.set(bytesOf(512, sequence + 7), memoryBytes - 1024)
  return {
    version: 1,
    sequence,
    moduleHash: createHash('sha256').update('module').digest('hex'),
    optionsHash: createHash('sha256').update('options').digest('hex'),
    inputOffset: sequence * 1000,
    outputOffset: sequence * 1200,
    timestamp: 1_700_000_000_000 + sequence,
    metadata: { job: 'nightly', attempt: sequence, nested: { tags: ['a', 'b'], ok: true, none: null } },
    guest: {
      memory,
      globals: [sequence, -2.5, 123n, -(2n ** 63n), 2n ** 63n - 1n, NaN, -0, Infinity],
      region: { ptr: 1024, size: 4096 },
    },
  }
}

function infoOf(c: Checkpoint): Omit<CheckpointInfo, 'storedBytes'> {
  const { guest: _guest, ...info } = c
  return info
}

function withoutStoredBytes(infos: CheckpointInfo[]): Omit<CheckpointInfo, 'storedBytes'>[] {
  return infos.map(({ storedBytes: _storedBytes, ...rest }) => rest)
}

function isCorrupt(err: unknown): boolean {
  assert.ok(err instanceof CorruptCheckpointError, `expected CorruptCheckpointError, got ${(err as Error)?.stack ?? err}`)
  assert.equal(err.name, 'CorruptCheckpointError')
  return true
}

async function assertCorrupt(bytes: Uint8Array, what: string): Promise<void> {
  await assert.rejects(decodeCheckpoint(bytes), isCorrupt, what)
  assert.throws(() => decodeCheckpointInfo(bytes), isCorrupt, what)
}

/** Splits an encoding into its parts, so a test can alter one and re-frame with a valid checksum. */
function unframe(bytes: Buffer): { header: Record<string, unknown>; compressed: Buffer } {
  const headerLength = bytes.readUInt32LE(5)
  const header = JSON.parse(bytes.subarray(9, 9 + headerLength).toString('utf8'))
  const compressedLength = bytes.readUInt32LE(9 + headerLength)
  return { header, compressed: bytes.subarray(13 + headerLength, 13 + headerLength + compressedLength) }
}

function frame(headerJson: string | Buffer, compressed: Buffer, version = 1): Buffer {
  const header = Buffer.from(headerJson)
  const head = Buffer.alloc(9)
  head.write('WSCK', 0, 'latin1')
  head.writeUInt8(version, 4)
  head.writeUInt32LE(header.length, 5)
  const clen = Buffer.alloc(4)
  clen.writeUInt32LE(compressed.length)
  const body = Buffer.concat([head, header, clen, compressed])
  return Buffer.concat([body, createHash('sha256').update(body).digest()])
}

interface Kind {
  name: string
  make(options?: { keep?: number }): CheckpointStorage
}

const kinds: Kind[] = [
  { name: 'MemoryCheckpointStorage', make: (options) => new MemoryCheckpointStorage(options) },
  { name: 'FileCheckpointStorage', make: (options) => new FileCheckpointStorage(tempDir(), options) },
  {
    name: 'FileCheckpointStorage (fsync: false)',
    make: (options) => new FileCheckpointStorage(tempDir(), { ...options, fsync: false }),
  },
]

for (const kind of kinds) {
  describe(`${kind.name}`, () => {
    it('is empty to begin with', async () => {
      const storage = kind.make()
      assert.equal(await storage.loadLatest(), undefined)
      assert.deepEqual(await storage.list(), [])
      await storage.prune(0)
    })

    it('round-trips a checkpoint: memory, globals (bigint, NaN, -0), region and metadata', async () => {
      const storage = kind.make()
      const checkpoint = makeCheckpoint(1)
      await storage.save(checkpoint)
      const loaded = await storage.loadLatest()
      assert.deepEqual(loaded, checkpoint)
      assert.ok(Object.is(loaded!.guest.globals[6], -0))
      assert.equal(typeof loaded!.guest.globals[2], 'bigint')
    })

    it('loads the newest by sequence and lists oldest first, with header fields only', async () => {
      const storage = kind.make({ keep: 10 })
      for (const sequence of [2, 1, 3]) await storage.save(makeCheckpoint(sequence))
      assert.equal((await storage.loadLatest())?.sequence, 3)
      const list = await storage.list()
      assert.deepEqual(withoutStoredBytes(list), [1, 2, 3].map((s) => infoOf(makeCheckpoint(s))))
      for (const info of list) {
        assert.equal('guest' in info, false)
        assert.equal(typeof info.storedBytes, 'number')
        assert.ok(info.storedBytes! > 0 && info.storedBytes! < 65536, `compressed: ${info.storedBytes}`)
      }
    })

    it('prune keeps the newest N, and 0 deletes everything', async () => {
      const storage = kind.make({ keep: 10 })
      for (let sequence = 1; sequence <= 5; sequence++) await storage.save(makeCheckpoint(sequence))
      await storage.prune(2)
      assert.deepEqual((await storage.list()).map((i) => i.sequence), [4, 5])
      await storage.prune(5)
      assert.deepEqual((await storage.list()).map((i) => i.sequence), [4, 5])
      await storage.prune(0)
      assert.deepEqual(await storage.list(), [])
      assert.equal(await storage.loadLatest(), undefined)
    })

    it('save applies the keep option (default 3)', async () => {
      const two = kind.make({ keep: 2 })
      const three = kind.make()
      for (let sequence = 1; sequence <= 5; sequence++) {
        await two.save(makeCheckpoint(sequence))
        await three.save(makeCheckpoint(sequence))
      }
      assert.deepEqual((await two.list()).map((i) => i.sequence), [4, 5])
      assert.deepEqual((await three.list()).map((i) => i.sequence), [3, 4, 5])
    })

    it('stores a copy: mutating the saved objects afterwards (or while saving) changes nothing', async () => {
      const storage = kind.make()
      const checkpoint = makeCheckpoint(1)
      const pending = storage.save(checkpoint)
      checkpoint.guest.memory.fill(0xee) // while the save is in flight
      await pending
      const expected = makeCheckpoint(1)
      assert.deepEqual(await storage.loadLatest(), expected)
      checkpoint.guest.globals[0] = 99
      checkpoint.guest.region.ptr = 7
      ;(checkpoint.metadata.nested as { tags: string[] }).tags.push('c')
      assert.deepEqual(await storage.loadLatest(), expected)
    })

    it('concurrent saves all land, and pruning leaves `keep`', async () => {
      const storage = kind.make({ keep: 3 })
      await Promise.all([1, 2, 3, 4, 5].map((sequence) => storage.save(makeCheckpoint(sequence))))
      assert.deepEqual((await storage.list()).map((i) => i.sequence), [3, 4, 5])
      assert.deepEqual(await storage.loadLatest(), makeCheckpoint(5))
    })

    it('refuses a bad keep', async () => {
      assert.throws(() => kind.make({ keep: -1 }), { code: 'ERR_WASM_INVALID_OPTION' })
      assert.throws(() => kind.make({ keep: 1.5 }), { code: 'ERR_WASM_INVALID_OPTION' })
      await assert.rejects(kind.make().prune(-1), { code: 'ERR_WASM_INVALID_OPTION' })
    })
  })
}

describe('checkpoint codec', () => {
  it('round-trips and returns plain Uint8Array memory', async () => {
    const checkpoint = makeCheckpoint(3)
    const bytes = await encodeCheckpoint(checkpoint)
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'WSCK')
    const decoded = await decodeCheckpoint(bytes)
    assert.deepEqual(decoded, checkpoint)
    assert.equal(Object.getPrototypeOf(decoded.guest.memory), Uint8Array.prototype)
    assert.deepEqual(decodeCheckpointInfo(bytes), { ...infoOf(checkpoint), storedBytes: bytes.length })
  })

  it('round-trips an empty memory and no globals', async () => {
    const checkpoint = makeCheckpoint(1, 0)
    checkpoint.guest.globals = []
    assert.deepEqual(await decodeCheckpoint(await encodeCheckpoint(checkpoint)), checkpoint)
  })

  it('decodes from a Uint8Array view at an offset', async () => {
    const bytes = await encodeCheckpoint(makeCheckpoint(2))
    const padded = new Uint8Array(bytes.length + 10)
    padded.set(bytes, 5)
    assert.deepEqual(await decodeCheckpoint(padded.subarray(5, 5 + bytes.length)), makeCheckpoint(2))
  })

  it('every truncation fails with CorruptCheckpointError', async () => {
    const bytes = await encodeCheckpoint(makeCheckpoint(4))
    const lengths = new Set<number>()
    for (let n = 0; n < bytes.length; n += 7) lengths.add(n)
    for (let n = Math.max(0, bytes.length - 40); n < bytes.length; n++) lengths.add(n)
    for (const n of lengths) await assertCorrupt(bytes.subarray(0, n), `truncated to ${n} of ${bytes.length}`)
    // and trailing junk
    await assertCorrupt(Buffer.concat([bytes, Buffer.from([0])]), 'one byte appended')
  })

  it('a flipped byte anywhere fails with CorruptCheckpointError', async () => {
    const bytes = await encodeCheckpoint(makeCheckpoint(5, 4096))
    for (let i = 0; i < bytes.length; i++) {
      const copy = Buffer.from(bytes)
      copy[i]! ^= 1 << (i % 8)
      await assertCorrupt(copy, `bit ${i % 8} of byte ${i} flipped`)
    }
  })

  it('anything that is not a checkpoint fails with CorruptCheckpointError', async () => {
    await assertCorrupt(new Uint8Array(0), 'empty')
    await assertCorrupt(Buffer.from('hello world, this is not a checkpoint at all, not even close'), 'text')
    await assertCorrupt(null as unknown as Uint8Array, 'null')
    await assertCorrupt('WSCK' as unknown as Uint8Array, 'a string')
  })

  it('refuses another format version, even with a valid checksum', async () => {
    const { header, compressed } = unframe(await encodeCheckpoint(makeCheckpoint(1)))
    await assert.rejects(decodeCheckpoint(frame(JSON.stringify(header), compressed, 2)), (err: Error) => {
      isCorrupt(err)
      assert.match(err.message, /version 2/)
      return true
    })
  })

  it('lengths pointing past the end fail', async () => {
    const bytes = await encodeCheckpoint(makeCheckpoint(1))
    const headerLength = bytes.readUInt32LE(5)
    for (const [at, value] of [
      [5, 0xffffffff],
      [5, headerLength + 1],
      [9 + headerLength, 0xffffffff],
      [9 + headerLength, 0],
    ] as const) {
      const copy = Buffer.from(bytes)
      copy.writeUInt32LE(value, at)
      await assertCorrupt(copy, `u32 at ${at} set to ${value}`)
    }
  })

  it('a header claiming a huge memory fails without allocating it', async () => {
    const { header, compressed } = unframe(await encodeCheckpoint(makeCheckpoint(1)))
    const before = process.memoryUsage().arrayBuffers
    for (const memoryLength of [2 ** 32, 2 ** 31, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
      const hostile = frame(JSON.stringify({ ...header, memoryLength }), compressed)
      if (memoryLength > 2 ** 32) assert.throws(() => decodeCheckpointInfo(hostile), isCorrupt, 'beyond wasm32')
      await assert.rejects(decodeCheckpoint(hostile), isCorrupt, `memoryLength ${memoryLength}`)
    }
    await assert.rejects(decodeCheckpoint(await encodeCheckpoint(makeCheckpoint(1)), { maxMemoryBytes: 1000 }), isCorrupt)
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 2 ** 20, 'did not allocate the claimed memory')
  })

  it('a small header over a memory that inflates further (a zip bomb) stops at the stated length', async () => {
    const { header } = unframe(await encodeCheckpoint(makeCheckpoint(1)))
    const bomb = deflateRawSync(Buffer.alloc(32 * 2 ** 20), { level: 9 }) // 32 MiB of zeros in ~32 KiB
    const before = process.memoryUsage().arrayBuffers
    await assert.rejects(decodeCheckpoint(frame(JSON.stringify({ ...header, memoryLength: 65536 }), bomb)), isCorrupt)
    assert.ok(process.memoryUsage().arrayBuffers - before < 16 * 2 ** 20, 'inflation was capped')
    // and one that inflates to less than it claims
    await assert.rejects(
      decodeCheckpoint(frame(JSON.stringify({ ...header, memoryLength: 64 * 2 ** 20 + 1 }), bomb)),
      isCorrupt,
    )
  })

  it('checks the type of every header field', async () => {
    const { header, compressed } = unframe(await encodeCheckpoint(makeCheckpoint(1)))
    // the unaltered re-frame is accepted, so each rejection below is the alteration's doing
    assert.deepEqual(await decodeCheckpoint(frame(JSON.stringify(header), compressed)), makeCheckpoint(1))
    const alterations: Record<string, unknown>[] = [
      { version: 2 },
      { version: '1' },
      { sequence: '1' },
      { sequence: -1 },
      { sequence: 1.5 },
      { moduleHash: 1 },
      { optionsHash: null },
      { inputOffset: -5 },
      { outputOffset: '12' },
      { timestamp: 'now' },
      { metadata: null },
      { metadata: [1, 2] },
      { metadata: 'x' },
      { globals: {} },
      { globals: ['1'] },
      { globals: [null] },
      { globals: [{ i64: 12 }] },
      { globals: [{ i64: '1.5' }] },
      { globals: [{ i64: String(2n ** 63n) }] },
      { globals: [{ i64: '1', f64: '0000000000000000' }] },
      { globals: [{ f64: 'zz' }] },
      { globals: [{ f32: '00000000' }] },
      { region: null },
      { region: { ptr: 1 } },
      { region: { ptr: -1, size: 0 } },
      { region: { ptr: 0, size: 2 ** 32 } },
      { memoryLength: -1 },
      { memoryLength: '65536' },
    ]
    for (const alteration of alterations) {
      await assertCorrupt(frame(JSON.stringify({ ...header, ...alteration }), compressed), JSON.stringify(alteration))
    }
    for (const missing of Object.keys(header)) {
      const { [missing]: _gone, ...rest } = header
      await assertCorrupt(frame(JSON.stringify(rest), compressed), `without ${missing}`)
    }
    await assertCorrupt(frame('{"sequence": 1', compressed), 'JSON cut short')
    await assertCorrupt(frame('[]', compressed), 'an array')
    await assertCorrupt(frame(Buffer.from([0xff, 0xfe, 0x7b, 0x7d]), compressed), 'not UTF-8')
  })

  it('encode refuses checkpoints it could not decode again', async () => {
    const bad: [string, (c: Checkpoint) => void][] = [
      ['fractional sequence', (c) => (c.sequence = 1.5)],
      ['NaN offset', (c) => (c.inputOffset = NaN)],
      ['bigint metadata', (c) => (c.metadata = { n: 1n })],
      ['i64 overflow', (c) => (c.guest.globals = [2n ** 64n])],
      ['memory not bytes', (c) => (c.guest.memory = [1, 2] as unknown as Uint8Array)],
    ]
    for (const [what, spoil] of bad) {
      const c = makeCheckpoint(1, 16)
      spoil(c)
      await assert.rejects(encodeCheckpoint(c), TypeError, what)
    }
  })

  it('property: random checkpoints round-trip', async () => {
    const memory = fc
      .record({
        size: fc.integer({ min: 0, max: 65536 }),
        seed: fc.integer({ min: 1, max: 2 ** 31 }),
        kind: fc.constantFrom('zero', 'random', 'sparse'),
      }, { noNullPrototype: true })
      .map(({ size, seed, kind }) => {
        if (kind === 'random') return bytesOf(size, seed)
        const m = new Uint8Array(size)
        if (kind === 'sparse') for (let i = seed % 97; i < size; i += 997) m[i] = (i * seed) & 0xff
        return m
      })
    const global = fc.oneof(
      fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
      fc.double(),
      fc.float().map((f) => Math.fround(f)),
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    )
    const checkpoint = fc.record({
      version: fc.constant(1 as const),
      sequence: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
      moduleHash: fc.string(),
      optionsHash: fc.string({ unit: 'binary' }),
      inputOffset: fc.maxSafeNat(),
      outputOffset: fc.maxSafeNat(),
      timestamp: fc.integer({ min: 0, max: 2 ** 45 }),
      metadata: fc.dictionary(fc.string(), fc.jsonValue()).map((m) => JSON.parse(JSON.stringify(m))),
      guest: fc.record({
        memory,
        globals: fc.array(global, { maxLength: 12 }),
        region: fc.record(
          { ptr: fc.nat({ max: 2 ** 32 - 1 }), size: fc.nat({ max: 2 ** 32 - 1 }) },
          { noNullPrototype: true },
        ),
      }, { noNullPrototype: true }),
    }, { noNullPrototype: true })
    await fc.assert(
      fc.asyncProperty(checkpoint, async (c) => {
        const bytes = await encodeCheckpoint(c)
        assert.deepEqual(await decodeCheckpoint(bytes), c)
        assert.deepEqual(decodeCheckpointInfo(bytes), { ...infoOf(c), storedBytes: bytes.length })
      }),
      { numRuns: 150 },
    )
  })
})

describe('FileCheckpointStorage on disk', () => {
  async function saved(sequences: number[], options: { keep?: number } = {}) {
    const dir = tempDir()
    const storage = new FileCheckpointStorage(dir, { keep: 10, ...options })
    for (const sequence of sequences) await storage.save(makeCheckpoint(sequence))
    return { dir, storage, file: (sequence: number) => path.join(dir, `checkpoint-${String(sequence).padStart(12, '0')}.wsck`) }
  }

  it('names files by zero-padded sequence, and 10 sorts after 9', async () => {
    const { dir, storage } = await saved([8, 9, 10, 100])
    assert.deepEqual(fs.readdirSync(dir).sort(), [
      'checkpoint-000000000008.wsck',
      'checkpoint-000000000009.wsck',
      'checkpoint-000000000010.wsck',
      'checkpoint-000000000100.wsck',
    ])
    assert.equal((await storage.loadLatest())?.sequence, 100)
    await storage.prune(2)
    assert.deepEqual((await storage.list()).map((i) => i.sequence), [10, 100])
    assert.deepEqual(
      (await storage.list()).map((i) => i.storedBytes),
      ['checkpoint-000000000010.wsck', 'checkpoint-000000000100.wsck'].map((n) => fs.statSync(path.join(dir, n)).size),
    )
  })

  it('a torn (truncated) newest file is skipped for the previous one', async () => {
    const { storage, file } = await saved([1, 2, 3])
    const bytes = fs.readFileSync(file(3))
    fs.writeFileSync(file(3), bytes.subarray(0, bytes.length >> 1))
    assert.deepEqual(await storage.loadLatest(), makeCheckpoint(2))
    assert.deepEqual((await storage.list()).map((i) => i.sequence), [1, 2])
    fs.writeFileSync(file(3), '') // torn at zero length, as after a power cut without fsync
    assert.deepEqual(await storage.loadLatest(), makeCheckpoint(2))
  })

  it('a corrupt newest file (one flipped byte) is skipped for the previous one', async () => {
    const { storage, file } = await saved([1, 2, 3])
    const bytes = fs.readFileSync(file(3))
    bytes[bytes.length >> 1]! ^= 0x40
    fs.writeFileSync(file(3), bytes)
    assert.deepEqual(await storage.loadLatest(), makeCheckpoint(2))
    assert.deepEqual((await storage.list()).map((i) => i.sequence), [1, 2])
  })

  it('returns undefined when no file is intact', async () => {
    const { storage, file } = await saved([1, 2])
    fs.writeFileSync(file(1), 'junk')
    fs.truncateSync(file(2), 100)
    assert.equal(await storage.loadLatest(), undefined)
    assert.deepEqual(await storage.list(), [])
  })

  it('a file whose name and content disagree on the sequence is skipped', async () => {
    const { storage, file } = await saved([1, 2])
    fs.copyFileSync(file(1), file(7))
    assert.equal((await storage.loadLatest())?.sequence, 2)
    assert.deepEqual((await storage.list()).map((i) => i.sequence), [1, 2])
  })

  it('ignores a leftover .tmp file and cleans it up on save and on prune', async () => {
    const { dir, storage } = await saved([1])
    fs.writeFileSync(path.join(dir, '.tmp-0123456789abcdef'), 'half a checkpoint')
    fs.writeFileSync(path.join(dir, 'README'), 'not ours')
    assert.equal((await storage.loadLatest())?.sequence, 1)
    assert.deepEqual((await storage.list()).map((i) => i.sequence), [1])
    await storage.save(makeCheckpoint(2))
    assert.deepEqual(fs.readdirSync(dir).sort(), ['README', 'checkpoint-000000000001.wsck', 'checkpoint-000000000002.wsck'])

    fs.writeFileSync(path.join(dir, '.tmp-feedface'), '')
    await storage.prune(1)
    assert.deepEqual(fs.readdirSync(dir).sort(), ['README', 'checkpoint-000000000002.wsck'])
  })

  it('a missing directory reads as empty, and save creates it', async () => {
    const dir = path.join(tempDir(), 'not', 'yet')
    const storage = new FileCheckpointStorage(dir)
    assert.equal(await storage.loadLatest(), undefined)
    assert.deepEqual(await storage.list(), [])
    await storage.prune(1)
    assert.equal(fs.existsSync(dir), false)
    await storage.save(makeCheckpoint(1))
    assert.deepEqual(fs.readdirSync(dir), ['checkpoint-000000000001.wsck'])
    assert.deepEqual(await new FileCheckpointStorage(dir).loadLatest(), makeCheckpoint(1))
  })

  it('concurrent saves leave exactly `keep` files and no temporaries', async () => {
    const dir = tempDir()
    const storage = new FileCheckpointStorage(dir, { keep: 3 })
    await Promise.all([5, 1, 4, 2, 3].map((sequence) => storage.save(makeCheckpoint(sequence, 256 * 1024))))
    assert.deepEqual(fs.readdirSync(dir).sort(), [3, 4, 5].map((s) => `checkpoint-${String(s).padStart(12, '0')}.wsck`))
    assert.deepEqual((await new FileCheckpointStorage(dir).list()).map((i) => i.sequence), [3, 4, 5])
  })

  it('saving a sequence again replaces its file atomically', async () => {
    const { storage } = await saved([1])
    const again = makeCheckpoint(1)
    again.metadata = { second: true }
    await storage.save(again)
    assert.deepEqual(await storage.loadLatest(), again)
  })
})
