/**
 * maxLatency: input from a source that stays open (a socket, `tail -f`, a user typing) reaches
 * the guest without waiting for a full chunk or the end of input, while a fast source still
 * gets full chunks, and the timer behind it never keeps a process alive.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import net from 'node:net'
import { Readable, Writable, type Duplex } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it } from 'node:test'
import { Chunker, offsetOf, wasmTransform, type Isolation } from '../lib/index.js'
import { example } from './helpers/reference.js'
import { collector, delay } from './helpers/streams.js'

/** The next `data` from `stream`, or a rejection naming `what` after `ms`. */
function nextData(stream: NodeJS.ReadableStream, what: string, ms = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.removeListener('data', onData)
      reject(new Error(`no output within ${ms} ms: ${what}`))
    }, ms)
    const onData = (d: Buffer): void => {
      clearTimeout(timer)
      resolve(d)
    }
    stream.once('data', onData)
  })
}

/** Everything `stream` outputs during `ms`. */
async function outputDuring(stream: NodeJS.ReadableStream, ms: number): Promise<Buffer> {
  const seen: Buffer[] = []
  const onData = (d: Buffer): void => void seen.push(d)
  stream.on('data', onData)
  await delay(ms)
  stream.removeListener('data', onData)
  return Buffer.concat(seen)
}

describe('maxLatency: the Chunker', () => {
  it('passes a whole record on while the input stays open, and holds an unfinished one', async () => {
    const chunker = new Chunker({ bufferSize: 64 * 1024, delimiter: '\n' })
    chunker.write(Buffer.from('ping\npo'))
    const first = await nextData(chunker, 'ping')
    assert.equal(first.toString(), 'ping\n', 'the whole record, without the unfinished one')
    assert.equal(offsetOf(first), 0)
    assert.equal((await outputDuring(chunker, 50)).length, 0, 'an unfinished record is held')
    chunker.write(Buffer.from('ng\n'))
    const second = await nextData(chunker, 'pong')
    assert.equal(second.toString(), 'pong\n')
    assert.equal(offsetOf(second), 5)
    chunker.end()
  })

  it('without a delimiter, passes on all held bytes', async () => {
    const chunker = new Chunker({ bufferSize: 64 * 1024, maxLatency: 0 })
    chunker.write(Buffer.from('abc'))
    const out = await nextData(chunker, 'abc')
    assert.equal(out.toString(), 'abc')
    chunker.write(Buffer.from('de'))
    const next = await nextData(chunker, 'de')
    assert.equal(next.toString(), 'de')
    assert.equal(offsetOf(next), 3)
    chunker.end()
  })

  it('bounds the wait by the oldest held byte, not the latest write', async () => {
    const chunker = new Chunker({ bufferSize: 64 * 1024, maxLatency: 40 })
    const started = performance.now()
    chunker.write(Buffer.from('a'))
    // A writer trickling bytes faster than maxLatency must not postpone the first ones forever.
    const trickle = setInterval(() => chunker.write(Buffer.from('b')), 10)
    try {
      const out = await nextData(chunker, 'trickled bytes', 2000)
      assert.ok(out.toString().startsWith('a'))
      assert.ok(performance.now() - started < 1000, 'out after about maxLatency')
    } finally {
      clearInterval(trickle)
      chunker.destroy()
    }
  })

  it('maxLatency: Infinity waits for a full chunk or the end of input, as before', async () => {
    const chunker = new Chunker({ bufferSize: 64 * 1024, delimiter: '\n', maxLatency: Infinity })
    chunker.write(Buffer.from('ping\n'))
    assert.equal((await outputDuring(chunker, 100)).length, 0, 'nothing before the end')
    const rest = nextData(chunker, 'end of input')
    chunker.end()
    assert.equal((await rest).toString(), 'ping\n')
  })

  it('a fast writer still gets full chunks, even with maxLatency 0 and a slow consumer', async () => {
    let sent = 0
    const source = new Readable({
      read() {
        if (sent >= 200_000) this.push(null)
        else {
          sent += 1000
          this.push(Buffer.alloc(1000, 'x'))
        }
      },
    })
    const sizes: number[] = []
    const slow = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, cb) {
        sizes.push(chunk.length)
        setTimeout(cb, 3) // longer than maxLatency: the timer fires while the consumer is busy
      },
    })
    await pipeline(source, new Chunker({ bufferSize: 4096, maxLatency: 0 }), slow)
    assert.equal(sizes.reduce((a, b) => a + b, 0), 200_000)
    assert.deepEqual(sizes.slice(0, -1).filter((n) => n !== 4096), [], 'every chunk but the last is full')
  })

  it('after destroy, a held tail never comes out', async () => {
    const chunker = new Chunker({ bufferSize: 1024, maxLatency: 20 })
    const seen: Buffer[] = []
    chunker.on('data', (d: Buffer) => seen.push(d))
    chunker.on('error', () => assert.fail('no error after a bare destroy'))
    chunker.write(Buffer.from('held'))
    chunker.destroy()
    await delay(80)
    assert.deepEqual(seen, [])
  })

  it('the timer keeps no process alive, and neither an ended nor a destroyed stream stays referenced by it', async () => {
    const chunkerUrl = new URL('../lib/stages/chunker.js', import.meta.url).href
    // An armed timer holds its stream until it fires; a cleared one must not. The 'armed' stream
    // is the control: it shows the check would see a timer still pending.
    const script = `
      import { Chunker } from ${JSON.stringify(chunkerUrl)}
      const collected = []
      const registry = new FinalizationRegistry((name) => collected.push(name))
      function start(how) {
        const c = new Chunker({ bufferSize: 1024, delimiter: '\\n', maxLatency: 600000 })
        c.on('data', () => {})
        c.write(Buffer.from('one\\ntwo'))
        if (how === 'destroyed') c.destroy()
        if (how === 'ended') c.end()
        registry.register(c, how)
      }
      // The last one made may linger in a register; it is left out of the result.
      for (const how of ['armed', 'destroyed', 'ended', 'last']) start(how)
      const seen = () => collected.filter((name) => name !== 'last').sort()
      for (let i = 0; i < 50 && seen().length < 2; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10))
        globalThis.gc()
      }
      console.log(JSON.stringify(seen()))
      // Nothing else here: the process must now exit by itself, armed timers notwithstanding.
    `
    const child = spawn(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let stdout = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    let killed = false
    const killer = setTimeout(() => {
      killed = true
      child.kill('SIGKILL')
    }, 15_000)
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
    clearTimeout(killer)
    assert.equal(killed, false, 'a held tail kept the process alive')
    assert.equal(code, 0)
    assert.deepEqual(JSON.parse(stdout), ['destroyed', 'ended'], 'only the streams whose timer was stopped were collected')
  })

  it('refuses a negative, NaN, non-number or over-long maxLatency', () => {
    for (const bad of [-1, Number.NaN, '10', 2 ** 31, -Infinity]) {
      assert.throws(() => new Chunker({ maxLatency: bad as number }), { code: 'ERR_WASM_INVALID_OPTION' }, String(bad))
      assert.throws(() => wasmTransform(example('upper.wasm'), { maxLatency: bad as number }), { code: 'ERR_WASM_INVALID_OPTION' }, String(bad))
    }
    for (const ok of [0, 2.5, 10, 2 ** 31 - 1, Infinity]) {
      new Chunker({ maxLatency: ok }).destroy()
    }
  })
})

for (const isolation of ['inline', 'worker'] as Isolation[]) {
  describe(`maxLatency through wasmTransform (${isolation})`, () => {
    it('answers ping\\n while the input stays open', async () => {
      const stream = wasmTransform(example('upper.wasm'), { isolation, delimiter: '\n' })
      try {
        stream.write('ping\n')
        assert.equal((await nextData(stream, 'PING')).toString(), 'PING\n')
        stream.write('pong\n')
        assert.equal((await nextData(stream, 'PONG')).toString(), 'PONG\n')
        assert.equal(stream.metrics().bytesIn, 10)
      } finally {
        stream.destroy()
      }
    })

    it('maxLatency: Infinity holds the record until the input ends, as before', async () => {
      const stream = wasmTransform(example('upper.wasm'), { isolation, delimiter: '\n', maxLatency: Infinity })
      stream.write('ping\n')
      assert.equal((await outputDuring(stream, 150)).length, 0)
      const sink = collector()
      const done = pipeline(stream as Duplex, sink)
      stream.end()
      await done
      assert.equal(sink.result().toString(), 'PING\n')
    })

    it('a line-based TCP service answers each line on a connection that stays open', async () => {
      const server = net.createServer((socket) => {
        pipeline(socket, wasmTransform(example('upper.wasm'), { isolation, delimiter: '\n' }), socket).catch(() => {})
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      const { port } = server.address() as net.AddressInfo
      const client = net.connect(port, '127.0.0.1')
      try {
        await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject))
        client.write('ping\n')
        assert.equal((await nextData(client, 'PING over TCP')).toString(), 'PING\n')
        client.write('hello ')
        client.write('world\n')
        let reply = ''
        while (!reply.endsWith('\n')) reply += (await nextData(client, 'HELLO WORLD over TCP')).toString()
        assert.equal(reply, 'HELLO WORLD\n')
      } finally {
        client.destroy()
        await new Promise((resolve) => server.close(resolve))
      }
    })
  })
}
