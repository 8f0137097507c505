/**
 * The package as a user meets it: `npm pack`, the tarball installed into a fresh directory, a
 * TypeScript consumer compiled against it with `skipLibCheck: false` (so every shipped .d.ts a
 * user's program reaches is checked, with its dependencies' types as npm installs them), then
 * run through `import`, `require()` and the `wasm-sandbox` binary.
 *
 * The tarball is packed from this checkout's dist/ (built by `npm test`'s pretest) with
 * `--ignore-scripts`: its prepack (a clean rebuild) would delete dist/ under the tests running
 * beside this one. It is installed with a real `npm install` from the local tarball; its
 * dependencies come from the npm registry (`--prefer-offline`: from npm's cache when there), not
 * from this repository's node_modules, which holds our devDependencies and would hide a type
 * package missing from `dependencies` (the bug this test was written for). The consumer is
 * compiled with this repository's TypeScript.
 */
import assert from 'node:assert/strict'
import { execFile, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { repoRoot } from './helpers/reference.js'

const exec = promisify(execFile)
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

interface PackResult {
  filename: string
  files: { path: string; size: number }[]
}

/** The environment for a nested npm: without the outer `npm test`'s package and prefix variables. */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (/^npm_(package_|lifecycle_|config_local_prefix$|config_prefix$)/i.test(key)) continue
    env[key] = value
  }
  return env
}

/** Every file under `dir`, as paths relative to it with '/' separators. */
function walk(dir: string, prefix = ''): string[] {
  const out: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name
    if (entry.isDirectory()) out.push(...walk(join(dir, entry.name), rel))
    else out.push(rel)
  }
  return out
}

const CONSUMER = `
import {
  wasmTransform,
  createSandbox,
  processFile,
  loadGuest,
  Chunker,
  BackpressureGate,
  WasmExecutor,
  CheckpointTap,
  FileSink,
  FileCheckpointStorage,
  MemoryCheckpointStorage,
  GuestInstance,
  WasmSandboxError,
  isWasmSandboxError,
  type SandboxOptions,
  type SandboxStream,
  type StreamMetrics,
  type WasmSandboxErrorCode,
  type ModuleSource,
  type LoadedGuest,
  type Checkpoint,
} from 'wasm-sandbox'
import wasmGulp, { type WasmGulpOptions, type WasmGulpStream } from 'wasm-sandbox/gulp'
import { wasmTransformStream } from 'wasm-sandbox'
import { pipeline } from 'node:stream/promises'
import { Readable, Writable, type Duplex } from 'node:stream'

const gulpOptions: WasmGulpOptions = { extname: '.upper.txt', delimiter: '\\n' }
const plugin: WasmGulpStream = wasmGulp('upper.wasm', gulpOptions)
void plugin
const web = wasmTransformStream('upper.wasm', { delimiter: '\\n' })
const webReadable: ReadableStream<Uint8Array> = web.readable
const webWritable: WritableStream<Uint8Array> = web.writable
void [webReadable, webWritable]

const options: SandboxOptions = {
  bufferSize: 4096,
  delimiter: '\\n',
  backpressure: 'drop',
  flowControl: { highWaterMark: 1 << 20, lowWaterMark: 1 << 18 },
  limits: { memory: 1 << 24, timeout: 1000 },
  recoveryStrategy: { retry: 2 },
}
const stream: SandboxStream = wasmTransform('upper.wasm', options)
const duplex: Duplex = stream
const metrics: StreamMetrics = stream.metrics()
const dropped: number = metrics.bytesDropped
stream.on('drop', ({ offset, length }: { offset: number; length: number }) => void (offset + length))
export async function main(): Promise<void> {
  await pipeline(Readable.from(['a\\n']), duplex, new Writable({ write: (_c, _e, cb) => cb() }))
  const sandbox = createSandbox({ isolation: 'inline' })
  const out: Buffer = await sandbox.call('upper.wasm', 'hi')
  const guest: LoadedGuest = await loadGuest(new URL('https://example.com/upper.wasm'))
  const source: ModuleSource = guest.module
  void source
  const result = await processFile('in', 'out', 'upper.wasm', { checkpoint: { dir: '.cp' } })
  const checkpoint: Checkpoint | undefined = await new FileCheckpointStorage('.cp').loadLatest()
  void [out, result.resumedFrom, checkpoint, new MemoryCheckpointStorage(), GuestInstance]
}
new Chunker({ bufferSize: 10, delimiter: '\\n' }).pipe(new BackpressureGate({ strategy: 'sample' }))
void [WasmExecutor, CheckpointTap, FileSink, dropped]
try {
  void 0
} catch (err) {
  if (isWasmSandboxError(err)) {
    const code: WasmSandboxErrorCode = err.code
    const offset: number | undefined = err.offset
    void [code, offset]
  }
  if (err instanceof WasmSandboxError && err.code === 'ERR_WASM_TIMEOUT') void err
}

// The types are real, not \`any\`: each of these must be an error (an unused @ts-expect-error is one).
// @ts-expect-error an unknown option
wasmTransform('upper.wasm', { bufSize: 1 })
// @ts-expect-error a bad strategy
wasmTransform('upper.wasm', { backpressure: 'lossy' })
// @ts-expect-error a stream is not a number
const wrong: number = wasmTransform('upper.wasm')
// @ts-expect-error not an error code
const badCode: WasmSandboxErrorCode = 'ERR_NOPE'
// @ts-expect-error extname is a string
wasmGulp('upper.wasm', { extname: 1 })
void [wrong, badCode]
`

/** A CommonJS file of the consumer: require() of the package, checked by TypeScript too. */
const CONSUMER_CJS = `
import sandbox = require('wasm-sandbox')
import gulp = require('wasm-sandbox/gulp')
const stream: import('node:stream').Duplex = sandbox.wasmTransform('upper.wasm', { delimiter: '\\n' })
void [stream, gulp.default('upper.wasm')]
// @ts-expect-error not an export
sandbox.noSuchExport()
`

/** Like @tsconfig/node20: no DOM, so no WebAssembly types but the package's own. */
const TSCONFIG_NODE = {
  compilerOptions: {
    target: 'ES2022',
    lib: ['ES2023'],
    module: 'nodenext',
    moduleResolution: 'nodenext',
    types: ['node'],
    strict: true,
    skipLibCheck: false,
    noEmit: true,
  },
  include: ['consumer.ts', 'consumer-cjs.cts'],
}

/** TypeScript's default lib for the target, DOM included: the package's declarations must merge with it. */
const TSCONFIG_DOM = {
  compilerOptions: { ...TSCONFIG_NODE.compilerOptions, lib: undefined, exactOptionalPropertyTypes: true },
  include: TSCONFIG_NODE.include,
}

describe('packaging: the packed package, installed and used', () => {
  let work: string
  let consumer: string
  let installed: string
  let pack: PackResult
  let installOutput: string

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'wasm-sandbox-pack-'))
    const { stdout } = await exec(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], {
      cwd: repoRoot,
      env: npmEnv(),
      maxBuffer: 16 << 20,
    })
    pack = (JSON.parse(stdout) as PackResult[])[0]!
    consumer = join(work, 'consumer')
    mkdirSync(consumer)
    writeFileSync(
      join(consumer, 'package.json'),
      JSON.stringify({
        name: 'consumer',
        version: '1.0.0',
        private: true,
        type: 'module',
        dependencies: { 'wasm-sandbox': `file:${join(work, pack.filename)}`, '@types/node': '^20.19.0' },
      }),
    )
    const install = await exec(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel', 'warn'], {
      cwd: consumer,
      env: npmEnv(),
      maxBuffer: 16 << 20,
    })
    installOutput = install.stdout + install.stderr
    installed = join(consumer, 'node_modules', 'wasm-sandbox')
  })

  after(() => {
    if (work) rmSync(work, { recursive: true, force: true })
  })

  it('the tarball holds what a user needs', () => {
    const files = new Set(pack.files.map((f) => f.path))
    for (const needed of [
      'package.json',
      'README.md',
      'LICENSE',
      'CHANGELOG.md',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/cli.js',
      'dist/runners/worker-entry.js',
      'dist/wasm-globals.d.ts',
      'examples/demo-input.txt',
    ]) {
      assert.ok(files.has(needed), `${needed} is in the tarball`)
    }
    // Every examples/, docs/ or include/ file the README names (and the repository has) is shipped.
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
    const named = new Set(readme.match(/\b(?:examples|docs|include)\/[\w./-]*\.(?:wasm|wat|txt|mjs|c|h|md)\b/g) ?? [])
    assert.ok(named.size > 5, 'the README names example files')
    for (const path of named) {
      if (existsSync(join(repoRoot, path))) assert.ok(files.has(path), `${path}, named in the README, is in the tarball`)
    }
    assert.match(readFileSync(join(repoRoot, 'LICENSE'), 'utf8'), /^MIT License/)
  })

  it('the tarball holds nothing else: no tests, benches, build output or scripts, no stale dist files', () => {
    const allowed = /^(?:package\.json|README\.md|CHANGELOG\.md|LICENSE|dist\/.+|lib\/.+\.ts|docs\/.+\.md|include\/.+\.h|examples\/.+)$/
    const refused = pack.files.map((f) => f.path).filter((p) => !allowed.test(p))
    assert.deepEqual(refused, [], 'files outside what a user needs')
    for (const { path } of pack.files) {
      assert.doesNotMatch(path, /(?:^|\/)(?:spec|bench|build|scripts|node_modules|\.ci|\.tmp)\//, path)
      assert.doesNotMatch(path, /\.test\.|\.tsbuildinfo$/, path)
    }
    // Nothing the repository ignores (a locally built grep-foo.wasm, a kit's build output), but dist/.
    const ignored = spawnSync('git', ['ls-files', '--others', '--ignored', '--exclude-standard', '-z', '--', ...pack.files.map((f) => f.path)], {
      cwd: repoRoot,
      encoding: 'utf8',
    })
    if (ignored.status === 0) {
      const shipped = ignored.stdout.split('\0').filter((p) => p && !p.startsWith('dist/'))
      assert.deepEqual(shipped, [], 'files git ignores are in the tarball')
    }
    // Each dist file is the build of a shipped lib/ source: nothing left over from a deleted one.
    const sources = new Set(pack.files.filter((f) => f.path.startsWith('lib/')).map((f) => f.path))
    for (const { path } of pack.files.filter((f) => f.path.startsWith('dist/'))) {
      const source = path.replace(/^dist\//, 'lib/').replace(/\.(?:d\.ts|js)(?:\.map)?$/, '.ts')
      assert.ok(sources.has(source), `${path} has its source ${source} (a stale build? npm run clean && npm run build)`)
    }
  })

  it('installing it runs no script of ours and warns of nothing of ours', () => {
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }
    for (const script of ['preinstall', 'install', 'postinstall', 'prepare']) {
      assert.equal(manifest.scripts?.[script], undefined, `no ${script} script: npm warns about it on every install`)
    }
    const ours = installOutput.split('\n').filter((line) => /warn/i.test(line) && /wasm-sandbox/.test(line))
    assert.deepEqual(ours, [], 'npm warnings naming the package')
  })

  it('a TypeScript consumer compiles against it with skipLibCheck: false (nodenext; with and without DOM)', async () => {
    writeFileSync(join(consumer, 'consumer.ts'), CONSUMER)
    writeFileSync(join(consumer, 'consumer-cjs.cts'), CONSUMER_CJS)
    writeFileSync(join(consumer, 'tsconfig.json'), JSON.stringify(TSCONFIG_NODE, null, 2))
    writeFileSync(join(consumer, 'tsconfig.dom.json'), JSON.stringify(TSCONFIG_DOM, null, 2))
    const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc')
    const compile = (project: string): Promise<string> =>
      exec(process.execPath, [tsc, '-p', project, '--pretty', 'false'], { cwd: consumer, maxBuffer: 16 << 20 }).then(
        () => '',
        (err: { stdout?: string; stderr?: string }) => `${project}:\n${err.stdout ?? ''}${err.stderr ?? ''}`,
      )
    const failures = (await Promise.all([compile('tsconfig.json'), compile('tsconfig.dom.json')])).filter(Boolean)
    assert.equal(failures.join('\n'), '', 'tsc --noEmit reports no error')
  })

  it('runs from the installed package: import, require(), the binary and the socket example', async (t) => {
    const upper = join(installed, 'examples', 'upper.wasm')
    const input = readFileSync(join(installed, 'examples', 'demo-input.txt'))
    const expected = input.toString('latin1').toUpperCase()

    // ESM import; the default isolation runs the guest in a worker started from the installed dist/.
    const esm = await exec(
      process.execPath,
      ['--input-type=module', '-e', `import { createSandbox } from 'wasm-sandbox'; process.stdout.write(await createSandbox().call(${JSON.stringify(upper)}, 'hello'))`],
      { cwd: consumer },
    )
    assert.equal(esm.stdout, 'HELLO')

    // require() of the ESM package: the exports map's 'default' condition, Node >= 20.19 / 22.12.
    const requireScript =
      `if (typeof require('wasm-sandbox/gulp').default !== 'function') throw new Error('no gulp plugin');` +
      `const { createSandbox } = require('wasm-sandbox'); createSandbox().call(${JSON.stringify(upper)}, 'hello').then((b) => process.stdout.write(b))`
    if (process.features.require_module) {
      const cjs = await exec(process.execPath, ['--input-type=commonjs', '-e', requireScript], { cwd: consumer })
      assert.equal(cjs.stdout, 'HELLO')
      assert.doesNotMatch(cjs.stderr, /ERR_REQUIRE|ExperimentalWarning/)
    } else {
      t.diagnostic(`require(esm) is not in Node ${process.version}: needs 20.19 / 22.12 or later`)
    }

    // The binary npm linked, on the shipped demo input.
    const bin = join(consumer, 'node_modules', '.bin', process.platform === 'win32' ? 'wasm-sandbox.cmd' : 'wasm-sandbox')
    const cli = await exec(bin, [upper, join(installed, 'examples', 'demo-input.txt')], { cwd: consumer, encoding: 'latin1', maxBuffer: 16 << 20 })
    assert.equal(cli.stdout, expected)

    // The socket example, run from the installed package (it imports 'wasm-sandbox' by name).
    const server = spawn(process.execPath, [join(installed, 'examples', 'socket-filter.mjs'), '--port', '0'], {
      cwd: consumer,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    try {
      let stderr = ''
      server.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
      const port = await new Promise<number>((resolve, reject) => {
        let out = ''
        server.stdout!.on('data', (d: Buffer) => {
          out += d.toString()
          const match = /listening on 127\.0\.0\.1:(\d+)/.exec(out)
          if (match) resolve(Number(match[1]))
        })
        server.on('exit', (code) => reject(new Error(`the socket example exited (${code}): ${stderr}`)))
      })
      const reply = await new Promise<string>((resolve, reject) => {
        const socket = connect({ port, host: '127.0.0.1' })
        const chunks: Buffer[] = []
        socket.on('data', (d: Buffer) => chunks.push(d))
        socket.on('end', () => resolve(Buffer.concat(chunks).toString()))
        socket.on('error', reject)
        socket.end('alpha\nbeta\n')
      })
      assert.equal(reply, '1\talpha\n2\tbeta\n')
      const exited = new Promise<number | null>((resolve) => server.on('exit', resolve))
      server.kill('SIGTERM')
      assert.equal(await exited, 0)
    } finally {
      server.kill('SIGKILL')
    }
  })

  it("every source map's sources are shipped", () => {
    const maps = walk(join(installed, 'dist')).filter((p) => p.endsWith('.map'))
    assert.ok(maps.length > 20, 'maps are shipped')
    for (const map of maps) {
      const file = join(installed, 'dist', map)
      const { sources, sourceRoot } = JSON.parse(readFileSync(file, 'utf8')) as { sources: string[]; sourceRoot?: string }
      assert.ok(sources.length > 0, map)
      for (const source of sources) {
        const path = resolve(dirname(file), sourceRoot ?? '', source)
        assert.ok(existsSync(path), `${map} points at ${source}, which is not shipped`)
      }
    }
  })
})
