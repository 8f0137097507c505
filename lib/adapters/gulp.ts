/**
 * The gulp plugin, `wasm-sandbox/gulp`: an object stream of Vinyl files, each file's contents
 * piped through its own instance of the guest. A thin layer on the public API: it only uses
 * what `wasm-sandbox` exports, and nothing in the library imports it.
 */
import { availableParallelism } from 'node:os'
import path from 'node:path'
import { PassThrough, pipeline, type Readable } from 'node:stream'
import PluginError from 'plugin-error'
import { Transform } from 'streamx'
import {
  createSandbox,
  createSandboxStream,
  loadGuest,
  type LoadedGuest,
  type ModuleSource,
  type Sandbox,
  type SandboxOptions,
  type SandboxStream,
} from '../index.js'
import { endAndCollect } from '../api/collect.js'

export const PLUGIN_NAME = 'wasm-sandbox/gulp'

/**
 * The part of a Vinyl file the plugin uses. gulp hands it Vinyl objects; declared here so the
 * package's types do not depend on `@types/vinyl`.
 */
export interface VinylFile {
  path: string
  readonly base: string
  readonly relative: string
  contents: Buffer | NodeJS.ReadableStream | null
  isBuffer(): boolean
  isStream(): boolean
  isNull(): boolean
}

/** A file's path relative to its base, in parts, as gulp-rename passes it. */
export interface PathParts {
  /** Directory relative to the file's base (`.` for none). */
  dirname: string
  /** File name without its extension. */
  basename: string
  /** Extension with its dot (`.txt`), or `''`. */
  extname: string
}

export interface WasmGulpOptions extends Omit<SandboxOptions, 'checkpoint' | 'resumeFrom'> {
  /** New extension for every file the guest processed, with its dot (`'.upper.txt'`), or `''` to drop it. */
  extname?: string
  /**
   * Renames every file the guest processed, after `extname`: change the parts in place or return
   * new ones (the convention of gulp-rename).
   */
  rename?: (parts: PathParts, file: VinylFile) => PathParts | void
  /**
   * Buffer files processed at once, each by its own guest instance; they are passed on in the
   * order they came. Default: the number of CPUs, at most 4. (`maxWorkers` bounds the threads.)
   */
  concurrency?: number
}

/**
 * The plugin's object stream, typed as gulp plugins are (`NodeJS.ReadWriteStream`), plus the
 * Vinyl writes and `destroy()` it has (it is a streamx Transform, as gulp 5's own streams are).
 */
export type WasmGulpStream = NodeJS.ReadWriteStream & {
  write(file: VinylFile, callback?: (err?: Error | null) => void): boolean
  end(file?: VinylFile): WasmGulpStream
  destroy(err?: Error): void
}

/** A `PluginError` that keeps the typed error's properties (`code`, `offset`, `module`, ...). */
export type WasmPluginError = PluginError<Error & { code?: string; offset?: number }>

/**
 * A gulp plugin that pipes every file through the guest.
 *
 * - Buffer files (`gulp.src(glob)`) go through whole: one stream per file, so the guest starts
 *   with fresh state for each file; the module is compiled once for all of them.
 * - Streaming files (`gulp.src(glob, { buffer: false })`) get a `wasmTransform` stream as their
 *   new contents: nothing is buffered, output flows while the file is read.
 * - Null files (directories, `read: false`) pass through unchanged.
 * - A failure is a `PluginError` naming the file and keeping the `WasmSandboxError`'s `code` and
 *   `offset`: the plugin stream's error for a buffer file, the contents stream's error (what
 *   `gulp.dest` reads, so the task fails with it) for a streaming file.
 */
export default function wasmGulp(module: ModuleSource, options: WasmGulpOptions = {}): WasmGulpStream {
  const { extname, rename, concurrency, ...sandboxOptions } = options
  const renameFile = renamer(extname, rename)
  const maxInFlight = resolveConcurrency(concurrency)
  // One sandbox for all the files: its warm workers are reused from file to file, at most
  // `maxWorkers` at once.
  const sandbox = sandboxFor(sandboxOptions)
  let guest: Promise<LoadedGuest> | undefined
  // Loaded on the first file, not at creation: a task that matches no file reads nothing.
  const { limits } = sandbox.options
  const loaded = (): Promise<LoadedGuest> => (guest ??= loadGuest(module, { memoryLimit: limits.memory, maxModuleSize: limits.moduleSize, loadTimeout: limits.loadTimeout }))
  const running = new Set<SandboxStream>()

  async function transformFile(file: VinylFile): Promise<void> {
    const guest = await loaded()
    if (file.isStream()) {
      file.contents = pipeContents(file, () => createSandboxStream(guest, sandbox.options, sandbox.pool), sandbox.options.highWaterMark)
    } else {
      const stream = createSandboxStream(guest, sandbox.options, sandbox.pool)
      running.add(stream)
      try {
        file.contents = await runWhole(stream, file.contents as Buffer)
      } finally {
        running.delete(stream)
      }
    }
    renameFile(file)
  }

  // streamx, the stream library of gulp 5 itself: gulp.src(...).pipe(plugin) attaches no error
  // listener to a streamx destination, so a failure reaches gulp and fails the task. A Node
  // Transform's error there is swallowed by streamx's pipe and the task never ends
  // (gulpjs/gulp#2812).
  const plugin: Transform = new Transform({
    transform(data, callback): void {
      queue.add(data as VinylFile, () => callback(null, undefined))
    },
    flush(callback): void {
      queue.whenEmpty(() => callback(null))
    },
    predestroy(): void {
      // Files in flight stop with the plugin: their guests are terminated, not left running.
      queue.stop()
      // With an error: a bare destroy() of the bundle is a clean close, read as a short file.
      for (const stream of running) stream.destroy(new Error(`${PLUGIN_NAME}: the plugin was destroyed`))
    },
  })
  const queue = new OrderedQueue(maxInFlight, transformFile, plugin)
  return plugin as unknown as WasmGulpStream
}

/**
 * Runs up to `limit` files at once (each on its own guest instance, so several cores work) and
 * passes them on in the order they came. The first failure, in that order, destroys the plugin
 * with its PluginError.
 */
class OrderedQueue {
  /** Taken and not yet passed on, oldest first. */
  private readonly files: { file: VinylFile; done: Promise<void> }[] = []
  /** The transform callback waiting for room. */
  private waiting: (() => void) | undefined
  private emptied: (() => void) | undefined
  private draining = false
  private failed = false

  constructor(
    private readonly limit: number,
    private readonly run: (file: VinylFile) => Promise<void>,
    private readonly stream: Transform,
  ) {}

  add(file: VinylFile, callback: () => void): void {
    if (this.failed) {
      callback()
      return
    }
    const done = file.isNull() ? Promise.resolve() : this.run(file)
    done.catch(noop) // looked at in order, by drain(); not an unhandled rejection meanwhile
    this.files.push({ file, done })
    if (this.files.length < this.limit) callback()
    else this.waiting = callback
    void this.drain()
  }

  /** Destroys the plugin with `error`. */
  private fail(error: WasmPluginError): void {
    this.stop()
    // Out of the promise chain: with nobody listening, the 'error' event throws, and gulp
    // (async-done's domain) must see that throw, not a rejected promise.
    process.nextTick(() => this.stream.destroy(error))
  }

  /**
   * Takes no more files and lets go of the callbacks streamx waits on: it finishes a destroy
   * only once the transform or flush in progress has called back.
   */
  stop(): void {
    this.failed = true
    this.files.length = 0
    const callbacks = [this.waiting, this.emptied]
    this.waiting = this.emptied = undefined
    process.nextTick(() => {
      for (const callback of callbacks) callback?.()
    })
  }

  whenEmpty(callback: () => void): void {
    if (this.files.length === 0 || this.failed) callback()
    else this.emptied = callback
  }

  /** Passes on every finished file at the head, in order. */
  private async drain(): Promise<void> {
    if (this.draining) return
    this.draining = true
    while (this.files.length > 0 && !this.stream.destroying) {
      const { file, done } = this.files[0]!
      try {
        await done
      } catch (err) {
        if (!this.failed) this.fail(toPluginError(err, file))
        return
      }
      if (this.failed) return // stopped meanwhile: the plugin is being destroyed
      this.files.shift()
      try {
        this.stream.push(file)
      } catch (err) {
        // A 'data' listener threw: that is the listener's failure, thrown as it would be from a
        // Node stream's push, not turned into a rejection of this loop.
        process.nextTick(() => {
          throw err
        })
      }
      // Out of the promise chain, so a throwing listener is not a rejection.
      const waiting = this.waiting
      this.waiting = undefined
      if (waiting) process.nextTick(waiting)
    }
    this.draining = false
    const emptied = this.emptied
    this.emptied = undefined
    if (emptied && this.files.length === 0) process.nextTick(emptied)
  }
}

function noop(): void {}

function resolveConcurrency(value: unknown): number {
  if (value === undefined) return Math.min(4, availableParallelism())
  if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 64) return value
  throw new PluginError(PLUGIN_NAME, `concurrency must be an integer from 1 to 64, got ${JSON.stringify(value)}`)
}

function sandboxFor(options: SandboxOptions): Sandbox {
  const refused = (['checkpoint', 'resumeFrom'] as const).filter((key) => options[key] !== undefined)
  if (refused.length > 0) {
    // One checkpoint storage shared by many files would mix their checkpoints.
    throw new PluginError(PLUGIN_NAME, `${refused.join(' and ')} cannot apply to many files; use processFile for a long job that must resume`)
  }
  try {
    return createSandbox(options)
  } catch (err) {
    throw new PluginError(PLUGIN_NAME, err as Error)
  }
}

/** Ends the stream with `contents` and collects everything the guest outputs. */
function runWhole(stream: SandboxStream, contents: Buffer): Promise<Buffer> {
  // An empty file still gets init and flush (a counter outputs its zero); no empty chunk is written.
  return endAndCollect(stream, contents.length === 0 ? undefined : contents)
}

/**
 * The file's new contents: its old contents through a stream of the guest's. A read or guest
 * error reaches whoever reads the contents as a PluginError; a reader that stops early ends the
 * guest. The guest starts when the contents are first read: gulp.dest writes one file at a time
 * while dozens wait in its queue, and each waiting file would otherwise hold a worker.
 */
function pipeContents(file: VinylFile, create: () => SandboxStream, highWaterMark: number): Readable {
  const source = file.contents as unknown as Readable
  // The error names the file as it was read: by the time it comes, the file may have been
  // renamed, and gulp.dest moves file.path to the destination.
  const named = { path: file.path, relative: file.relative }
  const contents: LazyContents = new LazyContents({ highWaterMark }, () => {
    const stream = create()
    // Registered before pipeline()'s own listeners, so `contents` is destroyed with the
    // PluginError before pipeline() destroys it with the bare error.
    const fail = (err: Error): void => {
      if (!contents.destroyed) contents.destroy(toPluginError(err, named))
    }
    source.on('error', fail)
    stream.on('error', fail)
    pipeline(source, stream, contents, () => {
      // Every outcome already reached `contents`: its end, or its error through `fail`.
    })
  })
  // Never read, then dropped: the file's source is closed; no guest was started.
  contents.once('close', () => {
    if (!contents.started) source.destroy()
  })
  return contents
}

/** A PassThrough that runs `start` when it is first read. */
class LazyContents extends PassThrough {
  started = false

  constructor(
    options: { highWaterMark: number },
    private readonly start: () => void,
  ) {
    super(options)
  }

  override _read(size: number): void {
    if (!this.started) {
      this.started = true
      this.start()
    }
    super._read(size)
  }
}

function toPluginError(err: unknown, file: Pick<VinylFile, 'path' | 'relative'>): WasmPluginError {
  if (err instanceof PluginError) return err as WasmPluginError
  const cause = err instanceof Error ? err : new Error(String(err))
  const error = new PluginError(PLUGIN_NAME, cause, { fileName: file.path, message: `${file.relative}: ${cause.message}` })
  // Fields the error does not have (a guest error has no exitCode) would only clutter the report.
  for (const key of Object.keys(error) as (keyof typeof error)[]) if (error[key] === undefined) delete error[key]
  // Not enumerable, so gulp's report lists the error's fields, not the whole error again.
  Object.defineProperty(error, 'cause', { value: cause, configurable: true, writable: true })
  return error as WasmPluginError
}

function renamer(extname: unknown, rename: unknown): (file: VinylFile) => void {
  if (extname !== undefined && (typeof extname !== 'string' || (extname !== '' && !extname.startsWith('.')))) {
    throw new PluginError(PLUGIN_NAME, `extname must be a string starting with '.', or '' to drop the extension, got ${JSON.stringify(extname)}`)
  }
  if (rename !== undefined && typeof rename !== 'function') {
    throw new PluginError(PLUGIN_NAME, 'rename must be a function (parts, file) => parts | void')
  }
  const fn = rename as WasmGulpOptions['rename']
  return (file) => {
    if (extname === undefined && fn === undefined) return
    const relative = file.relative
    let parts: PathParts = {
      dirname: path.dirname(relative),
      basename: path.basename(relative, path.extname(relative)),
      extname: path.extname(relative),
    }
    if (extname !== undefined) parts.extname = extname
    if (fn) parts = fn(parts, file) ?? parts
    file.path = path.join(file.base, parts.dirname, parts.basename + parts.extname)
  }
}
