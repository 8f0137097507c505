/**
 * Sockets (issue 11, item 3): examples/socket-filter.mjs run as it ships, in a child process, on
 * 127.0.0.1. Every connection is piped through its own instance of the stateful line numberer,
 * so a shared instance or crossed streams show as wrong numbers or foreign lines.
 *
 * The server's memory and threads are read from /proc/<pid>/status (Linux): each guest runs in
 * its own worker thread, so the thread count says how many guests are alive.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { pipeline } from 'node:stream/promises'
import { after, before, describe, it } from 'node:test'
import { wasmTransform } from '../lib/index.js'
import { example, fixture, repoRoot } from './helpers/reference.js'
import { delay, randomBytes } from './helpers/streams.js'

const hasProc = existsSync('/proc/self/status')
const MiB = 1024 * 1024

interface Server {
  child: ChildProcess
  port: number
  /** Every stderr line so far. */
  log: string[]
  /** Resolves with the first stderr line (from now or already seen, after `from`) matching `pattern`. */
  waitFor(pattern: RegExp, ms?: number, from?: number): Promise<string>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

function startServer(args: string[] = []): Promise<Server> {
  const child = spawn(process.execPath, [example('socket-filter.mjs'), '--port', '0', ...args], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const log: string[] = []
  const waiters = new Set<() => void>()
  let partial = ''
  child.stderr!.setEncoding('utf8').on('data', (text: string) => {
    const lines = (partial + text).split('\n')
    partial = lines.pop()!
    log.push(...lines)
    for (const wake of waiters) wake()
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })), // after its stdio is read to the end
  )
  const waitFor = (pattern: RegExp, ms = 20_000, from = 0): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const line = log.slice(from).find((l) => pattern.test(l))
        if (line === undefined) return false
        waiters.delete(wake)
        clearTimeout(timer)
        resolve(line)
        return true
      }
      const wake = (): void => void check()
      const timer = setTimeout(() => {
        waiters.delete(wake)
        reject(new Error(`no server log line matching ${pattern} within ${ms} ms; log:\n${log.slice(-20).join('\n')}`))
      }, ms)
      waiters.add(wake)
      check()
    })
  return new Promise((resolve, reject) => {
    let out = ''
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      out += text
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(out)
      if (match) resolve({ child, port: Number(match[1]), log, waitFor, exited })
    })
    child.on('exit', (code) => reject(new Error(`server exited (${code}) before listening: ${log.join('\n')}`)))
  })
}

/** The child's resident memory (bytes) and thread count, from /proc. */
function status(pid: number): { rss: number; threads: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8')
  return { rss: Number(/VmRSS:\s+(\d+)/.exec(text)![1]) * 1024, threads: Number(/Threads:\s+(\d+)/.exec(text)![1]) }
}

/** Polls the child's thread count until `done(threads)`, or fails after `ms`. */
async function threadsUntil(pid: number, done: (threads: number) => boolean, what: string, ms = 20_000): Promise<number> {
  const deadline = Date.now() + ms
  for (;;) {
    const { threads } = status(pid)
    if (done(threads)) return threads
    if (Date.now() > deadline) throw new Error(`${what}: ${threads} threads after ${ms} ms`)
    await delay(25)
  }
}

/** Text lines unique to connection `id`, of varied lengths. */
function linesFor(id: number, count: number): string[] {
  const noise = randomBytes(count, id + 1)
  const lines: string[] = []
  for (let j = 0; j < count; j++) lines.push(`conn ${id} line ${j} ${'x'.repeat(noise[j]! % 40)}\n`)
  return lines
}

/** What the numberer replies to `lines`. */
const numbered = (lines: string[]): string => lines.map((line, j) => `${j + 1}\t${line}`).join('')

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' }, () => resolve(socket))
    socket.once('error', reject)
  })
}

/** Everything `socket` receives until the server ends its side. */
function replyOf(socket: net.Socket): Promise<string> {
  const chunks: Buffer[] = []
  socket.on('data', (d: Buffer) => chunks.push(d))
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(Buffer.concat(chunks).toString()))
    socket.once('error', reject)
  })
}

/** Writes `text` in pieces of 1..4096 bytes (cutting lines anywhere), yielding between them. */
async function trickle(socket: net.Socket, text: string, seed: number): Promise<void> {
  const bytes = Buffer.from(text)
  const sizes = randomBytes(1024, seed)
  for (let pos = 0, i = 0; pos < bytes.length; i++) {
    const size = 1 + ((sizes[i % sizes.length]! * 16 + i) % 4096)
    if (!socket.write(bytes.subarray(pos, pos + size))) await new Promise((r) => socket.once('drain', r))
    pos += size
    await new Promise((r) => setImmediate(r))
  }
}

/**
 * One wave: `count` clients connected at once (all their guests alive together), then each sends
 * its own lines, ends its side and reads the whole reply. Returns the peak RSS and thread count.
 */
async function wave(server: Server, count: number, baseThreads: number): Promise<{ peakRss: number; peakThreads: number }> {
  const pid = server.child.pid!
  let peakRss = 0
  let peakThreads = 0
  const sample = (): void => {
    const s = status(pid)
    peakRss = Math.max(peakRss, s.rss)
    peakThreads = Math.max(peakThreads, s.threads)
  }
  const sampler = setInterval(sample, 20)
  try {
    const sockets = await Promise.all(Array.from({ length: count }, () => connect(server.port)))
    // Every connection has its own guest in its own worker before any sends a byte.
    await threadsUntil(pid, (t) => t >= baseThreads + count, `${count} guests alive at once`)
    const inputs = sockets.map((_, i) => linesFor(i, 400 + ((i * 37) % 400)))
    const replies = sockets.map((socket) => replyOf(socket))
    await Promise.all(
      sockets.map(async (socket, i) => {
        await trickle(socket, inputs[i]!.join(''), i + 1)
        socket.end() // half-close: the reply is still to come
      }),
    )
    const got = await Promise.all(replies)
    for (let i = 0; i < count; i++) {
      if (got[i] !== numbered(inputs[i]!)) {
        const foreign = /conn (\d+) /.exec(got[i]!.split('\n').find((l) => !l.includes(`conn ${i} `)) ?? '')
        assert.fail(`connection ${i}: wrong reply (${got[i]!.length} bytes, expected ${numbered(inputs[i]!).length})${foreign ? `, holds lines of connection ${foreign[1]}` : ''}`)
      }
    }
    sample()
  } finally {
    clearInterval(sampler)
  }
  return { peakRss, peakThreads }
}

describe('sockets: examples/socket-filter.mjs', { skip: !hasProc && 'reads /proc (Linux)' }, () => {
  let server: Server
  let baseThreads: number
  let baseRss: number

  before(async () => {
    server = await startServer()
    const s = status(server.child.pid!)
    baseThreads = s.threads
    baseRss = s.rss
  })

  after(async () => {
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL')
    await server.exited
  })

  it('100 concurrent connections, each with its own stateful guest: exactly its own output, and memory stays bounded', async (t) => {
    const pid = server.child.pid!
    const first = await wave(server, 100, baseThreads)
    assert.ok(first.peakThreads >= baseThreads + 100, '100 guests were alive at once')
    await threadsUntil(pid, (n) => n <= baseThreads, 'every guest ends with its connection')
    const afterFirst = status(pid).rss
    const second = await wave(server, 100, baseThreads)
    await threadsUntil(pid, (n) => n <= baseThreads, 'every guest ends with its connection')
    const afterSecond = status(pid).rss
    const mb = (n: number): string => `${(n / MiB).toFixed(0)} MiB`
    t.diagnostic(
      `server RSS: ${mb(baseRss)} idle, peak ${mb(first.peakRss)} / ${mb(second.peakRss)} with 100 connections, ` +
        `${mb(afterFirst)} / ${mb(afterSecond)} after each wave; threads ${baseThreads} idle, peak ${first.peakThreads}`,
    )
    // Each live guest is a worker thread with its own small JS heap and guest memory: a few MiB.
    // (measured: about 8.5 MiB a connection once data flowed, 5.5 idle; see the README).
    assert.ok(first.peakRss - baseRss < 100 * 16 * MiB, `peak ${mb(first.peakRss)} over ${mb(baseRss)} idle: more than 16 MiB a connection`)
    // Nothing is kept per connection once it is gone: a second wave does not grow the server.
    assert.ok(afterSecond - afterFirst < 64 * MiB, `RSS grew from ${mb(afterFirst)} to ${mb(afterSecond)} over a second wave of 100`)
    assert.equal(server.log.filter((l) => / closed done: /.test(l)).length, 200, 'every connection closed cleanly')
  })

  it('a client that disconnects mid-stream ends its own guest and no other; a client that stops reading is paused, not buffered', async (t) => {
    const pid = server.child.pid!
    const from = server.log.length
    const before = await threadsUntil(pid, (n) => n <= baseThreads, 'idle before')

    // A: a client that stays and finishes last.
    const a = await connect(server.port)
    const aReply = replyOf(a)
    const aLines = linesFor(1000, 500)
    a.write(aLines.slice(0, 250).join(''))

    // B: sends, sees its guest answer, then resets the connection mid-stream.
    const b = await connect(server.port)
    const bFirst = new Promise<Buffer>((resolve) => b.once('data', resolve))
    b.write(linesFor(2000, 100).join(''))
    assert.match((await bFirst).toString(), /^1\tconn 2000 line 0 /)
    b.write('conn 2000 and more, without an end of line')
    await threadsUntil(pid, (n) => n >= before + 2, 'A and B have their guests')
    b.resetAndDestroy()
    const bClosed = await server.waitFor(/^#\d+ closed (?:ECONNRESET|EPIPE): /, 20_000, from)
    await threadsUntil(pid, (n) => n === before + 1, "B's guest ends; A's stays")

    // C: never reads, and writes far more than any buffer: the server must stop reading it.
    const c = await connect(server.port)
    c.pause()
    await threadsUntil(pid, (n) => n === before + 2, "C's guest starts")
    const rssBefore = status(pid).rss
    const line = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz\n')
    const flood = Buffer.alloc(64 * MiB, line)
    c.write(flood)
    // Wait until the server has stopped taking C's bytes: the client's queue stops shrinking.
    let queued = c.writableLength
    for (let stable = 0; stable < 10; ) {
      await delay(100)
      stable = c.writableLength === queued ? stable + 1 : 0
      queued = c.writableLength
    }
    assert.ok(queued > 16 * MiB, `the server stopped reading a client that does not read (${queued} bytes still queued in the client)`)
    const rssGrowth = status(pid).rss - rssBefore
    assert.ok(rssGrowth < 48 * MiB, `server RSS grew by ${(rssGrowth / MiB).toFixed(1)} MiB for a flood it could not answer`)
    c.resetAndDestroy()
    const cClosed = await server.waitFor(/^#\d+ closed (?:ECONNRESET|EPIPE): /, 20_000, server.log.indexOf(bClosed) + 1)
    const cIn = Number(/: (\d+) bytes in/.exec(cClosed)![1])
    assert.ok(cIn < 32 * MiB, `the guest took ${cIn} bytes of the 64 MiB flood: no more than the buffers between it and the client`)
    t.diagnostic(`a client flooding 64 MiB without reading: the guest took ${(cIn / MiB).toFixed(1)} MiB, server RSS grew ${(rssGrowth / MiB).toFixed(1)} MiB`)
    await threadsUntil(pid, (n) => n === before + 1, "C's guest ends")

    // A finishes untouched: its whole reply, numbered from 1 with nothing of B's or C's.
    a.end(aLines.slice(250).join(''))
    assert.equal(await aReply, numbered(aLines))
    await threadsUntil(pid, (n) => n <= before, "A's guest ends with its connection")
  })

  it(
    'connections one after another on warm (reused) workers: memory stays bounded',
    // Before b354d88 each stream's ring SharedArrayBuffers stayed alive in the reused worker's
    // isolate, and this grew 80-115 MiB.
    async (t) => {
      const pid = server.child.pid!
      await threadsUntil(pid, (n) => n <= baseThreads, 'idle before')
      const batch = async (): Promise<void> => {
        const sockets = await Promise.all(Array.from({ length: 10 }, () => connect(server.port)))
        const replies = sockets.map((socket) => replyOf(socket))
        sockets.forEach((socket, i) => socket.end(linesFor(i, 50).join('')))
        const got = await Promise.all(replies)
        got.forEach((reply, i) => assert.equal(reply, numbered(linesFor(i, 50))))
      }
      // Ten workers first, held at once: a burst boots at most a thread per core at a time and
      // is served by the warm ones as they free up, so batches alone grow the pool a thread or
      // two now and then, and each new thread's memory would count as growth here.
      const held = await Promise.all(Array.from({ length: 10 }, () => connect(server.port)))
      const heldReplies = held.map((socket) => replyOf(socket))
      held.forEach((socket, i) => socket.write(linesFor(i, 1).join('')))
      await threadsUntil(pid, (n) => n >= baseThreads + 10, 'ten guests alive at once')
      held.forEach((socket) => socket.end())
      await Promise.all(heldReplies)
      for (let i = 0; i < 5; i++) await batch() // the allocator warmed up
      const before = status(pid)
      for (let i = 0; i < 50; i++) await batch() // 500 connections, each worker reused 50 times
      const after = status(pid)
      const growth = after.rss - before.rss
      t.diagnostic(`server RSS grew ${(growth / MiB).toFixed(1)} MiB over 500 connections; threads ${before.threads} before, ${after.threads} after`)
      // Measured: 30-36 MiB (allocator and the workers' own heaps); 80-115 MiB with the ring leak.
      assert.ok(growth < 64 * MiB, `server RSS grew ${(growth / MiB).toFixed(1)} MiB over 500 connections`)
    },
  )

  it('stops cleanly: no new connections, open ones finish, then the process exits by itself', async () => {
    const from = server.log.length
    const open = await connect(server.port)
    const reply = replyOf(open)
    const lines = linesFor(3000, 200)
    open.write(lines.slice(0, 100).join(''))
    await server.waitFor(/ open 127\.0\.0\.1:\d+ \(1 open\)$/, 20_000, from)
    server.child.kill('SIGTERM')
    await server.waitFor(/^SIGTERM: no new connections; waiting for 1 open/)
    await assert.rejects(connect(server.port), { code: 'ECONNREFUSED' })
    assert.equal(server.child.exitCode, null, 'still serving the open connection')
    open.end(lines.slice(100).join(''))
    assert.equal(await reply, numbered(lines), 'the open connection got its whole reply')
    const exit = await Promise.race([server.exited, delay(20_000).then(() => 'still running')])
    assert.deepEqual(exit, { code: 0, signal: null }, 'exited by itself, with status 0')
    assert.ok(server.log.includes('server closed'))
  })
})

describe('sockets: a second signal closes open connections', { skip: !hasProc && 'reads /proc (Linux)' }, () => {
  it('SIGTERM twice: the open connection is closed and the process exits', async () => {
    const server = await startServer()
    try {
      const open = await connect(server.port)
      const closed = new Promise((resolve) => open.on('close', resolve))
      open.on('error', () => {})
      open.write('one\n')
      assert.equal((await new Promise<Buffer>((resolve) => open.once('data', resolve))).toString(), '1\tone\n')
      server.child.kill('SIGTERM')
      await server.waitFor(/^SIGTERM: no new connections/)
      server.child.kill('SIGTERM')
      await closed
      const exit = await Promise.race([server.exited, delay(20_000).then(() => 'still running')])
      assert.deepEqual(exit, { code: 0, signal: null })
      assert.ok(server.log.some((l) => /^#1 closed /.test(l)))
    } finally {
      server.child.kill('SIGKILL')
    }
  })
})

describe('sockets: a failing guest', { skip: !hasProc && 'reads /proc (Linux)' }, () => {
  it("a guest that fails closes its own connection, with the error's code in the log; the others carry on", async () => {
    // spec/fixtures/fail-on-bang.wasm echoes its input and fails on a chunk holding '!'.
    const server = await startServer([fixture('fail-on-bang.wasm')])
    try {
      const good = await connect(server.port)
      const goodReply = replyOf(good)
      good.write('calm\n')
      const bad = await connect(server.port)
      const badClosed = new Promise((resolve) => bad.on('close', resolve))
      bad.on('error', () => {})
      bad.on('data', () => {})
      bad.write('fine\n')
      bad.write('boom!\n')
      await badClosed
      await server.waitFor(/^#2 closed ERR_WASM_GUEST_ERROR: /)
      good.end('still calm\n')
      assert.equal(await goodReply, 'calm\nstill calm\n')
      await server.waitFor(/^#1 closed done: /)
    } finally {
      server.child.kill('SIGKILL')
      await server.exited
    }
  })
})

describe('sockets: the connection limit', { skip: !hasProc && 'reads /proc (Linux)' }, () => {
  it('--max-connections: a connection past the limit is closed at once, with no guest; the open one is unaffected', async () => {
    const server = await startServer(['--max-connections', '1'])
    try {
      const pid = server.child.pid!
      const base = status(pid).threads
      const a = await connect(server.port)
      const aReply = replyOf(a)
      a.write('one\n')
      await threadsUntil(pid, (n) => n === base + 1, "A's guest starts")
      const b = await connect(server.port)
      const bData: Buffer[] = []
      b.on('data', (d: Buffer) => bData.push(d))
      b.on('error', () => {})
      b.write('two\n')
      await new Promise((resolve) => b.on('close', resolve))
      assert.equal(Buffer.concat(bData).length, 0, 'the refused connection got nothing')
      await server.waitFor(/^refused 127\.0\.0\.1:\d+: 1 connections open$/)
      assert.equal(status(pid).threads, base + 1, 'no guest was started for it')
      a.end('three\n')
      assert.equal(await aReply, '1\tone\n2\tthree\n')
    } finally {
      server.child.kill('SIGKILL')
      await server.exited
    }
  })
})

describe('sockets: lossy flow control', { skip: !hasProc && 'reads /proc (Linux)' }, () => {
  it("--backpressure drop: a client that does not read is never paused; whole lines are dropped and counted", async () => {
    const server = await startServer(['--backpressure', 'drop'])
    try {
      const c = await connect(server.port)
      c.pause()
      c.on('error', () => {})
      const line = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz\n') // 37 bytes
      const total = 900_000 * line.length // about 32 MiB of whole lines
      const flood = Buffer.alloc(total, line)
      // The server keeps reading: every byte leaves the client although nothing is read back.
      await new Promise<void>((resolve, reject) => c.write(flood, (err) => (err ? reject(err) : resolve())))
      await server.waitFor(/^#1 dropped \d+ bytes$/)
      c.resetAndDestroy()
      const closed = await server.waitFor(/^#1 closed /)
      const dropped = Number(/, (\d+) dropped/.exec(closed)![1])
      const events = server.log.filter((l) => /^#1 dropped \d+ bytes$/.test(l)).map((l) => Number(/(\d+) bytes/.exec(l)![1]))
      assert.equal(events.reduce((a, b) => a + b, 0), dropped, "the 'drop' events add up to metrics().bytesDropped")
      // Whole lines, but for the last: the reset cuts the flood mid-line, and the end of input
      // hands on what was read, an unfinished line included (as a final line without '\n' is).
      assert.deepEqual(events.slice(0, -1).filter((n) => n % line.length !== 0), [], 'only whole lines are dropped')
      // Kernel buffers hold a few MiB in flight; the rest the server read, and shed.
      assert.ok(dropped > total / 2 && dropped <= total, `the server read the flood and shed most of it (${dropped} of ${total} bytes)`)
    } finally {
      server.child.kill('SIGKILL')
      await server.exited
    }
  })
})

describe("sockets: half-close and net's allowHalfOpen", () => {
  /** A server piping each connection through the numberer, and one client that ends its side first. */
  async function exchange(allowHalfOpen: boolean): Promise<{ reply: string; expected: string; serverError: unknown }> {
    let serverError: unknown
    const done: Promise<void>[] = []
    const server = net.createServer({ allowHalfOpen }, (socket) => {
      done.push(pipeline(socket, wasmTransform(example('numberer.wasm'), { delimiter: '\n' }), socket).catch((err) => void (serverError = err)))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    try {
      const lines = linesFor(7, 2000)
      const client = await connect((server.address() as net.AddressInfo).port)
      client.on('error', () => {})
      const chunks: Buffer[] = []
      client.on('data', (d: Buffer) => chunks.push(d))
      const closed = new Promise((resolve) => client.on('close', resolve))
      client.end(lines.join('')) // all the input, then the client's end
      await closed
      await Promise.all(done)
      return { reply: Buffer.concat(chunks).toString(), expected: numbered(lines), serverError }
    } finally {
      server.close()
    }
  }

  it("with net's default (allowHalfOpen: false) the reply after the client's end is lost", async () => {
    const { reply, expected, serverError } = await exchange(false)
    assert.ok(reply.length < expected.length, `got ${reply.length} of ${expected.length} bytes`)
    assert.equal((serverError as { code?: string })?.code, 'ERR_STREAM_PREMATURE_CLOSE')
  })

  it('with allowHalfOpen: true the client gets the whole reply', async () => {
    const { reply, expected, serverError } = await exchange(true)
    assert.equal(serverError, undefined)
    assert.equal(reply, expected)
  })
})
