/**
 * Module sources given as strings: `http:`, `https:` and `file:` strings are URLs (fetched or
 * read as such), anything else is a file path. Before, `'http://host/x.wasm'` was read as a
 * relative path and failed with ENOENT.
 */
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { pathToFileURL } from 'node:url'
import { createSandbox, isWasmSandboxError, loadGuest, wasmTransform } from '../lib/index.js'
import { FETCH_LIMITS } from '../lib/guest/load.js'
import { example, readExample } from './helpers/reference.js'
import { run } from './helpers/streams.js'
import { tempDir } from './helpers/temp.js'

describe('module sources: URL strings', () => {
  let server: Server
  let base: string
  const requests: string[] = []

  before(async () => {
    const upper = readExample('upper.wasm')
    server = createServer((req, res) => {
      requests.push(req.url ?? '')
      if (req.url === '/upper.wasm') res.writeHead(200, { 'content-type': 'application/wasm' }).end(upper)
      // A server that never answers, and one that streams without end.
      else if (req.url === '/silent.wasm') return
      else if (req.url === '/endless.wasm') {
        res.writeHead(200)
        const more = (): void => void (res.destroyed || res.write(Buffer.alloc(64 * 1024), () => setImmediate(more)))
        more()
      } else if (req.url === '/huge.wasm') res.writeHead(200, { 'content-length': String(2 ** 40) }).write('\0asm')
      else res.writeHead(404).end('not here')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(() => new Promise<void>((resolve) => server.close(() => resolve())))

  it("fetches an 'http://' string, as it does a URL object", async () => {
    const before = requests.length
    const out = await run(wasmTransform(`${base}/upper.wasm`, { isolation: 'inline' }), Buffer.from('hello\n'))
    assert.equal(out.toString(), 'HELLO\n')
    assert.deepEqual(requests.slice(before), ['/upper.wasm'], 'the module came from the server')
    const sandbox = createSandbox({ isolation: 'inline' })
    assert.equal((await sandbox.call(`${base}/upper.wasm`, 'abc')).toString(), 'ABC')
  })

  it('the scheme is case-insensitive, as in URLs', async () => {
    const guest = await loadGuest(`HTTP://127.0.0.1:${new URL(base).port}/upper.wasm`)
    assert.equal(guest.name, `HTTP://127.0.0.1:${new URL(base).port}/upper.wasm`)
  })

  it('an HTTP error is ERR_WASM_MODULE_NOT_FOUND naming the status, not a missing file', async () => {
    await assert.rejects(loadGuest(`${base}/missing.wasm`), (err: unknown) => {
      assert.ok(isWasmSandboxError(err))
      assert.equal(err.code, 'ERR_WASM_MODULE_NOT_FOUND')
      assert.equal(err.module, `${base}/missing.wasm`)
      assert.match(err.message, /HTTP 404/)
      assert.doesNotMatch(err.message, /ENOENT/)
      return true
    })
  })

  it('a fetch is bounded in time and size: a silent, an endless and a huge module each fail typed', async () => {
    const saved = { ...FETCH_LIMITS }
    FETCH_LIMITS.timeoutMs = 300
    try {
      await assert.rejects(loadGuest(`${base}/silent.wasm`), (err: unknown) => {
        assert.ok(isWasmSandboxError(err), String(err))
        assert.equal(err.code, 'ERR_WASM_MODULE_NOT_FOUND')
        assert.match(err.message, /abort|timeout/i)
        return true
      })
    } finally {
      Object.assign(FETCH_LIMITS, saved)
    }
    for (const [path, size] of [['/endless.wasm', /is \d+ bytes/], ['/huge.wasm', /is 1099511627776 bytes/]] as const) {
      await assert.rejects(loadGuest(`${base}${path}`, { maxModuleSize: 1024 * 1024 }), (err: unknown) => {
        assert.ok(isWasmSandboxError(err), String(err))
        assert.equal(err.code, 'ERR_WASM_MODULE_TOO_LARGE')
        assert.match(err.message, size)
        assert.match(err.message, /limits\.moduleSize \(1048576\)/)
        return true
      })
    }
  })

  it('limits.moduleSize refuses a larger module, from a file before reading it, or from bytes, exactly past the limit', async () => {
    const upper = readExample('upper.wasm')
    assert.equal((await run(wasmTransform(example('upper.wasm'), { isolation: 'inline', limits: { moduleSize: upper.length } }), Buffer.from('a'))).toString(), 'A')
    for (const module of [example('upper.wasm'), upper, pathToFileURL(example('upper.wasm')).href]) {
      await assert.rejects(run(wasmTransform(module, { isolation: 'inline', limits: { moduleSize: upper.length - 1 } }), Buffer.from('a')), (err: unknown) => {
        assert.ok(isWasmSandboxError(err))
        assert.equal(err.code, 'ERR_WASM_MODULE_TOO_LARGE')
        assert.match(err.message, new RegExp(`is ${upper.length} bytes, more than limits\\.moduleSize \\(${upper.length - 1}\\)`))
        return true
      })
    }
  })

  it('a stream over an unreachable URL fails with the typed error', async () => {
    // Port 1 on 127.0.0.1: nothing listens there, the connection is refused at once.
    const stream = wasmTransform('http://127.0.0.1:1/upper.wasm')
    await assert.rejects(run(stream, Buffer.from('x')), (err: unknown) => {
      assert.ok(isWasmSandboxError(err))
      assert.equal(err.code, 'ERR_WASM_MODULE_NOT_FOUND')
      assert.match(err.message, /http:\/\/127\.0\.0\.1:1\/upper\.wasm/)
      return true
    })
  })

  it("an 'http:' string that is not a valid URL is refused with the typed error", async () => {
    await assert.rejects(loadGuest('http://'), (err: unknown) => {
      assert.ok(isWasmSandboxError(err))
      assert.equal(err.code, 'ERR_WASM_MODULE_NOT_FOUND')
      assert.match(err.message, /Invalid URL/)
      return true
    })
  })

  it("reads a 'file:' string as a file URL (percent-escapes decoded)", async (t) => {
    const dir = tempDir(t, 'wasm-sandbox-src-')
    const path = join(dir, 'my upper.wasm')
    writeFileSync(path, readExample('upper.wasm'))
    const href = pathToFileURL(path).href
    assert.match(href, /my%20upper\.wasm$/)
    const out = await run(wasmTransform(href, { isolation: 'inline' }), Buffer.from('abc'))
    assert.equal(out.toString(), 'ABC')
  })

  it('any other string is still a file path', async () => {
    const out = await run(wasmTransform(example('upper.wasm'), { isolation: 'inline' }), Buffer.from('abc'))
    assert.equal(out.toString(), 'ABC')
    await assert.rejects(loadGuest('no/such/http:/upper.wasm'), (err: unknown) => {
      assert.ok(isWasmSandboxError(err))
      assert.equal(err.code, 'ERR_WASM_MODULE_NOT_FOUND')
      assert.match(err.message, /ENOENT/)
      return true
    })
  })
})
