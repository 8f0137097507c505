import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pipeline } from 'node:stream/promises'
import fc from 'fast-check'
import { Chunker, offsetOf, type WasmSandboxError } from '../lib/index.js'
import { collector, randomBytes, randomLines, sourceOf } from './helpers/streams.js'

async function chunk(input: Buffer, sizes: number[], options: ConstructorParameters<typeof Chunker>[0]) {
  const sink = collector()
  await pipeline(sourceOf(input, sizes), new Chunker(options), sink)
  return sink.chunks
}

function assertOffsets(chunks: Buffer[], start = 0): void {
  let offset = start
  for (const c of chunks) {
    assert.equal(offsetOf(c), offset, 'every chunk carries its input offset')
    offset += c.length
  }
}

describe('Chunker, by size', () => {
  for (const [name, length] of [
    ['empty', 0],
    ['one byte', 1],
    ['exactly one buffer', 1024],
    ['one byte over', 1025],
    ['many buffers', 10 * 1024 + 7],
  ] as const) {
    it(`re-chunks ${name} into bufferSize pieces, the last one shorter`, async () => {
      const input = randomBytes(length, 3)
      for (const sizes of [[length || 1], [1], [1000], [3, 5000, 17]]) {
        const chunks = await chunk(input, sizes, { bufferSize: 1024 })
        assert.deepEqual(Buffer.concat(chunks), input)
        chunks.slice(0, -1).forEach((c) => assert.equal(c.length, 1024))
        if (chunks.length > 0) assert.ok(chunks.at(-1)!.length <= 1024 && chunks.at(-1)!.length > 0)
        assert.equal(chunks.length, Math.ceil(length / 1024))
        assertOffsets(chunks)
      }
    })
  }

  it('passes a chunk of exactly bufferSize through as a view of its memory, not a copy, and not the object itself', async () => {
    const input = randomBytes(4096, 5)
    const chunker = new Chunker({ bufferSize: 4096 })
    chunker.write(input)
    chunker.end()
    const out = chunker.read() as Buffer
    assert.notEqual(out, input, 'a fresh object carries the offset')
    assert.equal(out.buffer, input.buffer, 'over the same memory: no copy')
    assert.equal(out.byteOffset, input.byteOffset)
    assert.equal(out.length, 4096)
    assert.equal(offsetOf(out), 0)
    assert.equal(offsetOf(input), undefined, "the caller's Buffer is not tagged")
  })

  it('starts offsets at startOffset (for a resumed stream)', async () => {
    const chunks = await chunk(randomBytes(3000), [700], { bufferSize: 1000, startOffset: 5000 })
    assertOffsets(chunks, 5000)
  })

  it('property: any split of any input gives bufferSize chunks with the same bytes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 5000 }),
        fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 2048 }),
        async (bytes, sizes, bufferSize) => {
          const input = Buffer.from(bytes)
          const chunks = await chunk(input, sizes, { bufferSize })
          assert.deepEqual(Buffer.concat(chunks), input)
          chunks.slice(0, -1).forEach((c) => assert.equal(c.length, bufferSize))
          assertOffsets(chunks)
        },
      ),
      { numRuns: 150 },
    )
  })
})

describe('Chunker, by record', () => {
  function assertWholeRecords(chunks: Buffer[], delimiter: Buffer, input: Buffer, bufferSize: number): void {
    assert.deepEqual(Buffer.concat(chunks), input, 'no byte lost or reordered')
    chunks.forEach((c, i) => {
      const last = i === chunks.length - 1
      if (!last || input.subarray(-delimiter.length).equals(delimiter)) {
        assert.ok(c.subarray(-delimiter.length).equals(delimiter), `chunk ${i} ends on a delimiter`)
      }
      if (c.length > bufferSize) {
        // Only a single record longer than bufferSize may exceed it.
        const firstEnd = c.indexOf(delimiter)
        assert.ok(firstEnd < 0 || firstEnd + delimiter.length === c.length, `oversized chunk ${i} is one record`)
      }
    })
    assertOffsets(chunks)
  }

  it('never cuts a line and fills chunks up to bufferSize', async () => {
    const input = randomLines(50_000, 9)
    const chunks = await chunk(input, [4096, 100, 9000], { bufferSize: 1024, delimiter: '\n' })
    assertWholeRecords(chunks, Buffer.from('\n'), input, 1024)
    const full = chunks.slice(0, -1).filter((c) => c.length > 900).length
    assert.ok(full > chunks.length / 2, 'most chunks are nearly full: records are packed')
  })

  it('sends a record longer than bufferSize whole and alone', async () => {
    const long = Buffer.alloc(5000, 'x')
    const input = Buffer.concat([Buffer.from('a\nb\n'), long, Buffer.from('\nc\n')])
    const chunks = await chunk(input, [7], { bufferSize: 1024, delimiter: '\n' })
    assertWholeRecords(chunks, Buffer.from('\n'), input, 1024)
    assert.ok(chunks.some((c) => c.length === 5001 && c.subarray(0, 5000).equals(long)))
  })

  it('accepts a record of exactly maxRecordSize and refuses one byte more', async () => {
    const ok = Buffer.concat([Buffer.alloc(2047, 'y'), Buffer.from('\n')])
    const chunks = await chunk(ok, [300], { bufferSize: 512, delimiter: '\n', maxRecordSize: 2048 })
    assert.deepEqual(Buffer.concat(chunks), ok)

    const tooLong = Buffer.concat([Buffer.from('a\n'), Buffer.alloc(2048, 'y'), Buffer.from('\n')])
    await assert.rejects(chunk(tooLong, [300], { bufferSize: 512, delimiter: '\n', maxRecordSize: 2048 }), (err: WasmSandboxError) => {
      assert.equal(err.code, 'ERR_WASM_RECORD_TOO_LARGE')
      assert.equal(err.offset, 2, 'offset of the record that is too long')
      return true
    })
  })

  it('refuses an unterminated final record over maxRecordSize', async () => {
    await assert.rejects(
      chunk(Buffer.alloc(3000, 'z'), [100], { bufferSize: 512, delimiter: '\n', maxRecordSize: 2048 }),
      { code: 'ERR_WASM_RECORD_TOO_LARGE' },
    )
  })

  it('handles multi-byte delimiters split across input chunks', async () => {
    const input = Buffer.from('one\r\ntwo\r\nthree\r\n'.repeat(200))
    const chunks = await chunk(input, [1, 2, 3, 5, 8, 13], { bufferSize: 64, delimiter: '\r\n' })
    assertWholeRecords(chunks, Buffer.from('\r\n'), input, 64)
  })

  it('property: random records split at random boundaries are never cut', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 60 }),
        fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 2, max: 512 }),
        fc.constantFrom('\n', '\r\n', '||'),
        fc.boolean(),
        async (records, sizes, bufferSize, delim, terminated) => {
          const delimiter = Buffer.from(delim)
          // Records must not contain the delimiter's first byte, or they would be several records.
          const clean = records.map((r) => Buffer.from(r.map((b) => (b === delimiter[0] ? 0x20 : b))))
          const parts = clean.flatMap((r, i) => (i < clean.length - 1 || terminated ? [r, delimiter] : [r]))
          const input = Buffer.concat(parts)
          const chunks = await chunk(input, sizes, { bufferSize, delimiter: delim, maxRecordSize: 1 << 20 })
          assertWholeRecords(chunks, delimiter, input, bufferSize)
        },
      ),
      { numRuns: 200 },
    )
  })

  it("'||' after a record and an empty record is never cut in two, on full chunks or on a pause", async () => {
    // Records "\0" and "": the delimiters are bytes 1-2 and 3-4; searched from the right, the
    // first four bytes "\0|||" would end at byte 4 and split the second delimiter.
    const input = Buffer.from([0, 0x7c, 0x7c, 0x7c, 0x7c])
    for (const maxLatency of [Infinity, 0]) {
      const chunks = await chunk(input, [1], { bufferSize: 4, delimiter: '||', maxLatency })
      assertWholeRecords(chunks, Buffer.from('||'), input, 4)
      assert.deepEqual(chunks.map((c) => [...c]), [[0, 0x7c, 0x7c], [0x7c, 0x7c]])
    }
  })
})

describe("Chunker: the caller's buffers are the caller's", () => {
  /** Every own property of a Buffer, symbols included: a tag would show up here. */
  const ownKeys = (b: Buffer): (string | symbol)[] => Reflect.ownKeys(b).filter((k) => typeof k === 'symbol' || !/^\d+$/.test(k))

  it('one Buffer written several times gives each chunk its own offset', async () => {
    for (const delimiter of [undefined, '\n']) {
      const page = Buffer.from('a b\n'.repeat(256)) // 1024 bytes
      const chunker = new Chunker({ bufferSize: 1024, ...(delimiter ? { delimiter } : {}) })
      // All writes land before anything is read, as with a fast producer reusing one page.
      for (let i = 0; i < 5; i++) chunker.write(page)
      chunker.end()
      const sink = collector()
      await pipeline(chunker, sink)
      assert.equal(sink.chunks.length, 5)
      assertOffsets(sink.chunks)
      assert.equal(new Set(sink.chunks).size, 5, 'five distinct objects')
      assert.ok(!sink.chunks.includes(page), 'none of them is the object written')
    }
  })

  it('never tags nor mutates what was written, whatever the sizes and the mode', async () => {
    for (const delimiter of [undefined, '\n', '\r\n']) {
      for (const sizes of [[1024], [2048], [512, 1536], [1], [700, 3000, 1024]]) {
        const input = randomLines(20_000, 17)
        const pieces: Buffer[] = []
        for (let at = 0, i = 0; at < input.length; i++) {
          const size = sizes[i % sizes.length]!
          pieces.push(Buffer.from(input.subarray(at, at + size)))
          at += size
        }
        const copies = pieces.map((p) => Buffer.from(p))
        const keys = pieces.map(ownKeys)
        const chunker = new Chunker({ bufferSize: 1024, ...(delimiter ? { delimiter } : {}) })
        const sink = collector()
        const done = pipeline(chunker, sink)
        for (const p of pieces) chunker.write(p)
        chunker.end()
        await done
        assert.deepEqual(Buffer.concat(sink.chunks), input)
        pieces.forEach((p, i) => {
          assert.ok(p.equals(copies[i]!), `piece ${i}: bytes unchanged`)
          assert.deepEqual(ownKeys(p), keys[i], `piece ${i}: no property added`)
          assert.equal(offsetOf(p), undefined)
        })
        for (const c of sink.chunks) assert.ok(!pieces.includes(c), 'every chunk out is an object of its own')
      }
    }
  })
})
