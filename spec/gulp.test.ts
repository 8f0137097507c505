/**
 * wasm-sandbox/gulp with the real gulp 5 (gulp.src, gulp.dest, series) and Vinyl, over temporary
 * directories of files: buffer and streaming modes, null files, renaming, a guest failing on one
 * file, and a plugin or a file stopped while its guest runs.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, unlinkSync, copyFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { PassThrough, Transform, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { after, describe, it } from 'node:test'
import { pathToFileURL } from 'node:url'
import gulp from 'gulp'
import PluginError from 'plugin-error'
import Vinyl from 'vinyl'
import wasmGulp, { PLUGIN_NAME, type WasmPluginError } from '../lib/adapters/gulp.js'
import { example, fixture, repoRoot, upperRef, wcRef } from './helpers/reference.js'
import { runChild, runNode } from './helpers/child.js'
import { delay, randomLines } from './helpers/streams.js'

const roots: string[] = []
after(() => {
  for (const dir of roots) rmSync(dir, { recursive: true, force: true })
})

/** A temporary directory holding `files` (relative path -> contents). */
function tree(files: Record<string, string | Buffer>): string {
  const root = mkdtempSync(join(tmpdir(), 'wasm-gulp-'))
  roots.push(root)
  for (const [name, contents] of Object.entries(files)) {
    mkdirSync(dirname(join(root, name)), { recursive: true })
    writeFileSync(join(root, name), contents)
  }
  return root
}

/** Every file under `dir`, relative path -> bytes. */
function readTree(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>()
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const full = join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name)
    out.set(relative(dir, full).split('\\').join('/'), readFileSync(full))
  }
  return out
}

// gulp reports a failed task as an 'error' event on itself too; the CLI listens, so do we.
gulp.on('error', () => {})

/** Waits until `condition()` holds, failing instead of hanging. */
async function until(condition: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!condition()) {
    if (Date.now() > end) assert.fail('timed out')
    await delay(5)
  }
}

/** Runs a task the way gulp runs it (series → async-done), resolving or rejecting with its outcome. */
function runTask(task: () => NodeJS.ReadableStream | NodeJS.WritableStream | Promise<unknown>): Promise<void> {
  return new Promise((resolve, reject) => gulp.series(task)((err) => (err ? reject(err) : resolve())))
}

/**
 * Records the 'error' events a stream emits without listening for them, so an error nobody
 * handles still reaches gulp as it would in a gulpfile.
 */
function errorSpy<T extends NodeJS.EventEmitter>(stream: T): T & { errors: unknown[] } {
  const errors: unknown[] = []
  const emit = stream.emit.bind(stream)
  stream.emit = ((event: string | symbol, ...args: unknown[]) => {
    if (event === 'error') errors.push(args[0])
    return emit(event, ...args)
  }) as T['emit']
  return Object.assign(stream, { errors })
}

/** Counts 'error' events on a stream (and keeps them from being unhandled). */
function errorCounter<T extends NodeJS.EventEmitter>(stream: T): T & { errors: Error[] } {
  const errors: Error[] = []
  stream.on('error', (err: Error) => errors.push(err))
  return Object.assign(stream, { errors })
}

const upper = example('upper.wasm')

const inputs = {
  'a.txt': 'alpha\nbeta\n',
  'b.txt': 'Mixed Case, punctuation! 123\n',
  'sub/c.txt': randomLines(300 * 1024, 7), // several 64 KiB chunks
  'sub/deeper/empty.txt': '',
}

for (const buffer of [true, false]) {
  const mode = buffer ? 'buffer mode' : 'streaming mode ({ buffer: false })'

  describe(`wasm-sandbox/gulp, ${mode}`, () => {
    it('runs every file through the guest, keeps the tree, renames with extname', async () => {
      const src = tree(inputs)
      const out = join(tree({}), 'build')
      let seenStreams = 0
      await runTask(() =>
        gulp
          .src('**/*.txt', { cwd: src, buffer, encoding: false })
          .pipe(wasmGulp(upper, { extname: '.up' }))
          .pipe(
            new Transform({
              objectMode: true,
              transform(file: Vinyl, _enc, cb) {
                if (file.isStream()) seenStreams++
                cb(null, file)
              },
            }),
          )
          .pipe(gulp.dest(out)),
      )
      const written = readTree(out)
      assert.deepEqual([...written.keys()].sort(), ['a.up', 'b.up', 'sub/c.up', 'sub/deeper/empty.up'])
      for (const [name, contents] of Object.entries(inputs)) {
        const outName = name.replace(/\.txt$/, '.up')
        assert.ok(written.get(outName)!.equals(upperRef(Buffer.from(contents))), `${outName} is ${name} upper-cased`)
      }
      assert.equal(seenStreams, buffer ? 0 : 4, 'streaming files stay streams after the plugin')
    })

    it('gives each file a fresh guest (a counting guest counts each file alone)', async () => {
      const files = { 'one.txt': 'a b c\nd\n', 'two.txt': randomLines(100 * 1024, 3), 'three.txt': 'x\n' }
      const src = tree(files)
      const out = tree({})
      // Small chunks, so each file is many calls into the guest and its count spans them.
      await runTask(() =>
        gulp.src('*.txt', { cwd: src, buffer, encoding: false }).pipe(wasmGulp(example('wc.wasm'), { bufferSize: 1024 })).pipe(gulp.dest(out)),
      )
      const written = readTree(out)
      for (const [name, contents] of Object.entries(files)) {
        assert.equal(written.get(name)!.toString(), wcRef(Buffer.from(contents)).toString(), `${name} counted alone`)
      }
    })

    it('reads and compiles the module once for all files', async () => {
      const files = Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`f${i}.txt`, `file ${i}\n`]))
      const src = tree(files)
      const out = tree({})
      const module = join(tree({}), 'upper.wasm')
      copyFileSync(upper, module)
      // The module file is gone once the first file has been through: a plugin that read it
      // again for a later file would fail with ERR_WASM_MODULE_NOT_FOUND.
      let removed = false
      const removeModule = new Transform({
        objectMode: true,
        transform(file: Vinyl, _enc, cb) {
          if (!removed) unlinkSync(module)
          removed = true
          cb(null, file)
        },
      })
      await runTask(() => gulp.src('*.txt', { cwd: src, buffer, encoding: false }).pipe(wasmGulp(module)).pipe(removeModule).pipe(gulp.dest(out)))
      assert.equal(removed, true)
      const written = readTree(out)
      assert.equal(written.size, 5)
      for (const [name, contents] of Object.entries(files)) assert.equal(written.get(name)!.toString(), contents.toUpperCase())
    })

    for (const style of ['.pipe() chain', 'stream.pipeline']) {
      it(`fails the task with one PluginError naming the file when the guest fails on it (${style})`, async () => {
        const bad = Buffer.from(randomLines(8000, 5).toString().replace(/!/g, '.'))
        bad[5000] = 0x21 // '!', in the chunk that starts at 4096 (bufferSize 1024)
        const src = tree({ 'ok.txt': 'fine\n', 'bad.txt': bad, 'sub/ok2.txt': 'also fine\n' })
        const out = tree({})
        // As in a gulpfile: the streams are made inside the task (gulp catches what they throw
        // there) and nothing of ours listens for errors; gulp or pipeline() reports them.
        const spies: { plugin?: { errors: unknown[] }; sink?: { errors: unknown[] } } = {}
        const task = (): NodeJS.WritableStream | Promise<void> => {
          const source = gulp.src('**/*.txt', { cwd: src, buffer, encoding: false })
          const plugin = (spies.plugin = errorSpy(wasmGulp(fixture('fail-on-bang.wasm'), { bufferSize: 1024, extname: '.out' })))
          const sink = (spies.sink = errorSpy(gulp.dest(out)))
          return style === 'stream.pipeline' ? pipeline(source, plugin, sink) : source.pipe(plugin).pipe(sink)
        }
        const err = (await runTask(task).then(
          () => assert.fail('the task succeeded'),
          (e: unknown) => e,
        )) as WasmPluginError
        assert.ok(err instanceof PluginError, `a PluginError, got ${String(err)}`)
        assert.equal(err.plugin, PLUGIN_NAME)
        assert.equal(err.fileName, join(src, 'bad.txt'))
        assert.match(err.message, /^bad\.txt: /)
        assert.equal(err.code, 'ERR_WASM_GUEST_ERROR')
        assert.equal(err.offset, 4096)
        assert.equal((err as unknown as { cause: { name: string } }).cause.name, 'WasmSandboxError')
        assert.match(String(err), /found a bang/)
        await delay(50) // any second error would have come by now
        // Buffer mode: the plugin stream fails (and the teardown passes that same error on to
        // gulp.dest). Streaming mode: the file's contents fail, which is what gulp.dest reads,
        // so dest fails; the plugin stream had passed the file on already.
        const { plugin, sink } = spies as Required<typeof spies>
        assert.deepEqual(plugin.errors, buffer ? [err] : [], 'errors on the plugin stream')
        assert.ok(sink.errors.every((e) => e === err), 'gulp.dest saw no other error')
        assert.equal(sink.errors.length, buffer ? sink.errors.length : 1, 'errors on gulp.dest')
        assert.ok(sink.errors.length <= 1)
        if (buffer) assert.equal(readTree(out).has('bad.out'), false, 'no output for the failed file')
      })
    }
  })
}

describe('wasm-sandbox/gulp, streaming mode', () => {
  it('passes output on while the file is still being read (nothing buffered)', async () => {
    const source = new PassThrough()
    const plugin = wasmGulp(upper, { delimiter: '\n' })
    plugin.write(new Vinyl({ cwd: '/', base: '/src', path: '/src/live.txt', contents: source }))
    const [file] = (await new Promise((resolve) => plugin.once('data', (f: Vinyl) => resolve([f])))) as [Vinyl]
    assert.equal(file.isStream(), true)
    const contents = file.contents as NodeJS.ReadableStream
    const chunks: string[] = []
    contents.on('data', (chunk: Buffer) => chunks.push(chunk.toString()))
    const ended = new Promise((resolve) => contents.once('end', resolve))
    source.write('first line\n')
    while (chunks.length === 0) await delay(5) // the source is still open
    assert.equal(chunks.join(''), 'FIRST LINE\n')
    source.end('second\n')
    await ended
    assert.equal(chunks.join(''), 'FIRST LINE\nSECOND\n')
  })

  it('starts the guest when the contents are first read, not while the file waits in a queue', async () => {
    // init-fails.wasm fails as soon as an instance starts: a guest started early would error the
    // contents before anyone read them.
    const source = new PassThrough()
    const plugin = wasmGulp(fixture('init-fails.wasm'))
    plugin.write(new Vinyl({ cwd: '/', base: '/src', path: '/src/waiting.txt', contents: source }))
    const file = (await new Promise((resolve) => plugin.once('data', resolve))) as Vinyl
    const contents = errorCounter(file.contents as NodeJS.ReadableStream & { destroyed: boolean })
    await delay(300)
    assert.deepEqual(contents.errors, [], 'no guest ran while nobody read')
    contents.resume()
    source.end('x')
    await new Promise((resolve) => contents.once('close', resolve))
    assert.equal(contents.errors.length, 1)
    assert.equal((contents.errors[0] as WasmPluginError).code, 'ERR_WASM_GUEST_ERROR')
    assert.match((contents.errors[0] as Error).message, /^waiting\.txt: .*init refused/)
  })

  it('contents dropped without being read close the file source', async () => {
    const source = new PassThrough()
    const plugin = wasmGulp(upper)
    plugin.write(new Vinyl({ cwd: '/', base: '/src', path: '/src/dropped.txt', contents: source }))
    const file = (await new Promise((resolve) => plugin.once('data', resolve))) as Vinyl
    ;(file.contents as PassThrough).destroy()
    await until(() => source.destroyed)
  })

  it('a read error of the file reaches its reader as a PluginError that keeps the code', async () => {
    const source = new PassThrough()
    const plugin = wasmGulp(upper)
    plugin.write(new Vinyl({ cwd: '/', base: '/src', path: '/src/broken.txt', contents: source }))
    const file = (await new Promise((resolve) => plugin.once('data', resolve))) as Vinyl
    const contents = errorCounter(file.contents as NodeJS.ReadableStream)
    contents.resume()
    source.destroy(Object.assign(new Error('disk on fire'), { code: 'EIO' }))
    await new Promise((resolve) => contents.once('close', resolve))
    assert.equal(contents.errors.length, 1)
    const err = contents.errors[0] as WasmPluginError
    assert.ok(err instanceof PluginError)
    assert.equal(err.code, 'EIO')
    assert.equal(err.fileName, '/src/broken.txt')
  })
})

describe('wasm-sandbox/gulp, several buffer files at once', () => {
  /** Writes `files` to a plugin and collects what it passes on, and its errors. */
  async function through(plugin: ReturnType<typeof wasmGulp>, files: Vinyl[]): Promise<{ out: Vinyl[]; errors: unknown[] }> {
    const out: Vinyl[] = []
    const errors: unknown[] = []
    plugin.on('data', (file: Vinyl) => out.push(file))
    plugin.on('error', (err: unknown) => errors.push(err))
    const closed = new Promise((resolve) => plugin.on('close', resolve))
    for (const file of files) plugin.write(file)
    plugin.end()
    await closed
    return { out, errors }
  }
  const vinyl = (name: string, contents: Buffer): Vinyl => new Vinyl({ cwd: '/', base: '/src', path: `/src/${name}`, contents })

  it('passes files on in the order they came, however long each takes', async () => {
    // slow.wasm busy-loops (first byte x 10 million) iterations: the first file is the slowest.
    const files = [0x30, 0x01, 0x08, 0x01, 0x01, 0x10, 0x01].map((first, i) => vinyl(`f${i}.bin`, Buffer.from([first, 0x61 + i])))
    const expected = files.map((f) => Buffer.from(f.contents as Buffer))
    const { out, errors } = await through(wasmGulp(fixture('slow.wasm'), { concurrency: 4 }), files)
    assert.deepEqual(errors, [])
    assert.deepEqual(
      out.map((f) => f.basename),
      files.map((f) => f.basename),
    )
    out.forEach((f, i) => assert.ok((f.contents as Buffer).equals(expected[i]!)))
  })

  it('stops at the first failing file in order: the files before it pass, none after', async () => {
    const names = ['a', 'b', 'c', 'bad', 'd', 'e', 'f']
    const files = names.map((n) => vinyl(`${n}.txt`, Buffer.from(n === 'bad' ? 'b!d' : n)))
    const { out, errors } = await through(wasmGulp(fixture('fail-on-bang.wasm'), { concurrency: 3 }), files)
    assert.deepEqual(
      out.map((f) => f.basename),
      ['a.txt', 'b.txt', 'c.txt'],
    )
    assert.equal(errors.length, 1)
    assert.equal((errors[0] as WasmPluginError).fileName, '/src/bad.txt')
  })

  it("runs on one sandbox's workers: maxWorkers bounds them (1 worker, 4 files at once)", async () => {
    const files = Array.from({ length: 6 }, (_, i) => vinyl(`w${i}.txt`, Buffer.from(`worker ${i}\n`)))
    const { out, errors } = await through(wasmGulp(upper, { maxWorkers: 1, concurrency: 4 }), files)
    assert.deepEqual(errors, [])
    assert.deepEqual(
      out.map((f) => String(f.contents)),
      files.map((_, i) => `WORKER ${i}\n`),
    )
  })

  it('concurrency: 1 runs one file at a time, with the same result', async () => {
    const files = ['x', 'y', 'z'].map((n) => vinyl(`${n}.txt`, Buffer.from(`${n} file\n`)))
    const { out, errors } = await through(wasmGulp(upper, { concurrency: 1 }), files)
    assert.deepEqual(errors, [])
    assert.deepEqual(
      out.map((f) => String(f.contents)),
      ['X FILE\n', 'Y FILE\n', 'Z FILE\n'],
    )
  })
})

describe('wasm-sandbox/gulp, null files and options', () => {
  it('passes null files through untouched, without loading the guest', async () => {
    const src = tree({ 'a.txt': 'x', 'sub/b.txt': 'y' })
    const seen: Vinyl[] = []
    // A module that does not exist: a null file that reached the guest would fail the task.
    await pipeline(
      gulp.src('**/*', { cwd: src, read: false }),
      wasmGulp(join(src, 'missing.wasm'), { extname: '.up' }),
      new Writable({
        objectMode: true,
        write(file: Vinyl, _enc, cb) {
          seen.push(file)
          cb()
        },
      }),
    )
    const files = seen.filter((f) => !f.isDirectory())
    assert.deepEqual(files.map((f) => f.relative.split('\\').join('/')).sort(), ['a.txt', 'sub/b.txt'])
    for (const f of seen) assert.equal(f.isNull(), true)
  })

  it('a module that cannot be read fails the first file with ERR_WASM_MODULE_NOT_FOUND', async () => {
    const plugin = errorCounter(wasmGulp('/nonexistent/guest.wasm'))
    plugin.write(new Vinyl({ cwd: '/', base: '/src', path: '/src/a.txt', contents: Buffer.from('a') }))
    await new Promise((resolve) => plugin.once('close', resolve))
    assert.equal(plugin.errors.length, 1)
    const err = plugin.errors[0] as WasmPluginError
    assert.ok(err instanceof PluginError)
    assert.equal(err.code, 'ERR_WASM_MODULE_NOT_FOUND')
    assert.equal(err.fileName, '/src/a.txt')
  })

  it('renames with a function, gulp-rename style (change the parts or return new ones)', async () => {
    const run = async (rename: Parameters<typeof wasmGulp>[1]): Promise<string> => {
      const plugin = wasmGulp(upper, rename)
      plugin.end(new Vinyl({ cwd: '/', base: '/src', path: '/src/sub/page.html', contents: Buffer.from('hi') }))
      const file = (await new Promise((resolve) => plugin.once('data', resolve))) as Vinyl
      assert.equal(String(file.contents), 'HI')
      return file.relative.split('\\').join('/')
    }
    assert.equal(await run({ rename: (p) => void (p.basename += '.min') }), 'sub/page.min.html')
    assert.equal(await run({ rename: (p) => ({ ...p, dirname: 'flat' }) }), 'flat/page.html')
    assert.equal(await run({ extname: '', rename: (p) => void (p.basename = p.basename.toUpperCase()) }), 'sub/PAGE')
  })

  it('a rename function that throws fails that file with a PluginError naming it', async () => {
    const plugin = errorCounter(
      wasmGulp(upper, {
        rename: () => {
          throw new Error('no name for you')
        },
      }),
    )
    plugin.end(new Vinyl({ cwd: '/', base: '/src', path: '/src/a.txt', contents: Buffer.from('a') }))
    await new Promise((resolve) => plugin.once('close', resolve))
    assert.equal(plugin.errors.length, 1)
    const err = plugin.errors[0] as WasmPluginError
    assert.ok(err instanceof PluginError)
    assert.equal(err.fileName, '/src/a.txt')
    assert.match(err.message, /^a\.txt: no name for you$/)
  })

  it('a signal aborted between files fails the next file with a PluginError, and the host goes on', async () => {
    // The next file's stream was destroyed as it was made: its AbortError went unhandled and
    // ended the process, though the plugin had an 'error' listener.
    const controller = new AbortController()
    const plugin = errorCounter(wasmGulp(upper, { signal: controller.signal }))
    const first = new Promise<Vinyl>((resolve) => plugin.once('data', resolve))
    plugin.write(new Vinyl({ cwd: '/', base: '/src', path: '/src/a.txt', contents: Buffer.from('one') }))
    assert.equal((await first).contents!.toString(), 'ONE')
    controller.abort()
    plugin.end(new Vinyl({ cwd: '/', base: '/src', path: '/src/b.txt', contents: Buffer.from('two') }))
    await new Promise((resolve) => plugin.once('close', resolve))
    assert.equal(plugin.errors.length, 1)
    assert.ok(plugin.errors[0] instanceof PluginError)
    assert.match(plugin.errors[0]!.message, /^b\.txt: .*aborted/)
  })

  it('refuses bad options when the plugin is created, with PluginErrors', () => {
    const refused = (options: Parameters<typeof wasmGulp>[1], code?: string): void => {
      assert.throws(
        () => wasmGulp(upper, options),
        (err: unknown) => err instanceof PluginError && err.plugin === PLUGIN_NAME && (code === undefined || (err as WasmPluginError).code === code),
      )
    }
    refused({ extname: 'up' })
    refused({ rename: 'x.txt' as never })
    refused({ bufferSize: -1 }, 'ERR_WASM_INVALID_OPTION')
    refused({ limits: { memory: 1 } }, 'ERR_WASM_INVALID_OPTION')
    refused({ checkpoint: {} } as never)
    refused({ concurrency: 0 })
    refused({ concurrency: 1.5 })
  })
})

describe('wasm-sandbox/gulp, stopping', () => {
  for (const mode of ['buffer', 'stream']) {
    it(`ends a running guest when ${mode === 'buffer' ? 'the plugin is destroyed mid-file' : "a streaming file's reader stops"}: the process exits by itself`, async () => {
      const { code, stdout, stderr, timedOut } = await runChild('gulp-destroy', [mode], 20_000)
      assert.equal(timedOut, false, `the child process hung: the guest kept running\n${stderr}`)
      assert.equal(code, 0, stderr)
      const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
      assert.equal(lines[0]!.destroyed, true)
      if (mode === 'buffer') assert.equal(lines[lines.length - 1]!.closed, true, "the plugin emits 'close' with files still queued")
      if (mode === 'stream') {
        assert.equal(lines[0]!.first, 'running')
        assert.equal(lines[lines.length - 1]!.sourceDestroyed, true, 'the file source is torn down too')
      }
      assert.equal(lines.some((l) => 'pluginError' in l), false, 'a destroy without an error reports none')
    })
  }
})

describe('wasm-sandbox/gulp, the package subpath', () => {
  it("resolves through package.json's exports, with its types", async () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { exports: Record<string, Record<string, string>> }
    const entry = pkg.exports['./gulp']!
    // types first, as TypeScript reads conditions in order; default last, for require(esm).
    assert.deepEqual(Object.keys(entry), ['types', 'import', 'default'])
    assert.match(readFileSync(join(repoRoot, entry.types!), 'utf8'), /export default function wasmGulp/)
    // Self-reference: the package's own name resolves through its exports from inside it.
    const loaded = (await import('wasm-sandbox/gulp' as string)) as { default: unknown }
    assert.equal(typeof loaded.default, 'function')
    assert.equal(import.meta.resolve('wasm-sandbox/gulp'), pathToFileURL(join(repoRoot, entry.import!)).href)
  })
})

describe('examples/gulpfile.mjs with the gulp CLI', () => {
  it('runs both tasks over a project directory', async () => {
    const big = randomLines(1024 * 1024, 11)
    const project = tree({ 'logs/app/today.log': 'error: disk\n', 'logs/old.log': 'ok\n', 'data/big.txt': big })
    const gulpBin = join(repoRoot, 'node_modules', 'gulp', 'bin', 'gulp.js')
    const gulpfile = join(repoRoot, 'examples', 'gulpfile.mjs')
    const { code, stderr, stdout, timedOut } = await runNode([gulpBin, '--gulpfile', gulpfile, '--cwd', project], 60_000)
    assert.equal(timedOut, false)
    assert.equal(code, 0, stdout + stderr)
    const written = readTree(join(project, 'build'))
    assert.deepEqual([...written.keys()].sort(), ['app/today.upper.log', 'data/big.txt', 'old.upper.log'])
    assert.equal(written.get('app/today.upper.log')!.toString(), 'ERROR: DISK\n')
    assert.ok(written.get('data/big.txt')!.equals(upperRef(big)))
  })
})
