#!/usr/bin/env node
import { randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, unlinkSync } from 'node:fs'
import { open, realpath, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import type { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { wasmTransform } from './api/wasm-transform.js'
import { FileSink } from './checkpoint/file-sink.js'
import { isWasmSandboxError } from './errors.js'
import { resolveOptions, type SandboxOptions } from './options.js'

const USAGE = `Usage: wasm-sandbox <module.wasm> [input] [-o output] [options] [-- program arguments]

Pipes input (a file, or standard input) through the guest module to output (a file, or
standard output). A WASI program is run as it is: its stdin is the input, its stdout the
output, its stderr goes to standard error, and what follows -- is its argv (after its name).

Options:
  -o, --output <file>       write here instead of standard output ('-': standard output); an existing file is replaced
                            only once the run has succeeded, and may not be the input
  -b, --buffer-size <n>     chunk size in bytes (default 65536)
  -d, --delimiter <s>       cut only after this delimiter, e.g. '\\n' (escapes \\n \\r \\t \\0 allowed)
      --max-record-size <n> longest record with --delimiter
      --max-latency <ms>    hand held input to the guest after this long (default 10 for standard
                            input; an input file waits for full chunks)
      --inline              run the guest on the main thread (trusted guests only: no time limit)
      --timeout <ms>        time limit per guest call (default 5000; worker isolation)
      --memory <bytes>      guest memory limit (default 268435456)
      --max-output <bytes>  total output limit (default unlimited)
WASI programs (nothing is granted unless named):
      --env <NAME=value>    an environment variable (repeatable)
      --dir <host[::guest]> a host directory the program may read, at guest path (default: the
                            same absolute path); a copy, bounded (repeatable)
      --dir-rw <host[::guest]>  the same, writable (changes stay in the program's copy)
      --per-record          one fresh run per record (with --delimiter) or chunk
  -h, --help                this text

Exit status: 0 on success, 1 on a guest or I/O error (the error code is printed), 2 on usage
errors (an unknown option, a bad value, -o naming the input); a WASI program's own non-zero
exit status is passed on.`

/** A mistake on the command line: exit status 2 and one line saying what to change. */
class UsageError extends Error {}

function unescape(s: string): string {
  return s.replace(/\\([nrt0\\])/g, (_, c: string) => ({ n: '\n', r: '\r', t: '\t', '0': '\0', '\\': '\\' })[c]!)
}

function integer(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  // Number() also takes '', ' 7', '0x10' and '1e3': a typo must not quietly become a size.
  if (!/^[0-9]+$/.test(value)) throw new UsageError(`${flag} takes a whole number in decimal, got ${JSON.stringify(value)}`)
  return Number(value)
}

const FLAG_OF: Record<string, string> = {
  bufferSize: '--buffer-size',
  maxLatency: '--max-latency',
  maxRecordSize: '--max-record-size',
  delimiter: '--delimiter',
  'limits.timeout': '--timeout',
  'limits.memory': '--memory',
  'limits.maxOutput': '--max-output',
}

/** The library's messages name its options; the user typed flags. */
function inFlags(message: string): string {
  return message.replace(/limits\.(?:timeout|memory|maxOutput)|bufferSize|maxRecordSize|maxLatency|delimiter/g, (name) => FLAG_OF[name]!)
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' },
      'buffer-size': { type: 'string', short: 'b' },
      delimiter: { type: 'string', short: 'd' },
      'max-record-size': { type: 'string' },
      'max-latency': { type: 'string' },
      inline: { type: 'boolean' },
      timeout: { type: 'string' },
      memory: { type: 'string' },
      'max-output': { type: 'string' },
      env: { type: 'string', multiple: true },
      dir: { type: 'string', multiple: true },
      'dir-rw': { type: 'string', multiple: true },
      'per-record': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    tokens: true,
  })
}

function sandboxOptions(values: ReturnType<typeof parse>['values']): SandboxOptions {
  const options: SandboxOptions = {}
  const bufferSize = integer('--buffer-size', values['buffer-size'])
  if (bufferSize !== undefined) options.bufferSize = bufferSize
  const maxRecordSize = integer('--max-record-size', values['max-record-size'])
  if (maxRecordSize !== undefined) options.maxRecordSize = maxRecordSize
  if (values.delimiter !== undefined) {
    if (values.delimiter === '') throw new UsageError('--delimiter must not be empty')
    options.delimiter = unescape(values.delimiter)
  }
  if (values.inline) options.isolation = 'inline'
  const maxLatency = integer('--max-latency', values['max-latency'])
  if (maxLatency !== undefined) options.maxLatency = maxLatency
  const limits: NonNullable<SandboxOptions['limits']> = {}
  const timeout = integer('--timeout', values.timeout)
  if (timeout !== undefined) limits.timeout = timeout
  const memory = integer('--memory', values.memory)
  if (memory !== undefined) limits.memory = memory
  const maxOutput = integer('--max-output', values['max-output'])
  if (maxOutput !== undefined) limits.maxOutput = maxOutput
  options.limits = limits
  options.wasi = wasiOptions(values)
  return options
}

/** The WASI grants on the command line; a module that is not a WASI program ignores them. */
function wasiOptions(values: ReturnType<typeof parse>['values']): NonNullable<SandboxOptions['wasi']> {
  const env: Record<string, string> = {}
  for (const pair of values.env ?? []) {
    const eq = pair.indexOf('=')
    if (eq < 1) throw new UsageError(`--env takes NAME=value, got ${JSON.stringify(pair)}`)
    env[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  const preopens: Record<string, { path: string; writable: boolean }> = {}
  const grant = (spec: string, writable: boolean): void => {
    const [host, guest] = spec.split('::') as [string, string | undefined]
    if (!host) throw new UsageError(`--dir takes host[::guest], got ${JSON.stringify(spec)}`)
    preopens[guest ?? resolve(host)] = { path: host, writable }
  }
  for (const spec of values.dir ?? []) grant(spec, false)
  for (const spec of values['dir-rw'] ?? []) grant(spec, true)
  return { env, preopens, stderr: process.stderr, ...(values['per-record'] ? { mode: 'record' as const } : {}) }
}

/**
 * One file under two names: hard links share an inode, a symlink resolves to the same real path.
 * Either way, writing the output would destroy the input as it is read.
 */
async function sameFile(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a, { bigint: true }).catch(() => undefined), stat(b, { bigint: true }).catch(() => undefined)])
  if (!sa || !sb) return false
  // Some file systems (FAT) report inode 0 for every file.
  if (sa.ino !== 0n && sa.dev === sb.dev && sa.ino === sb.ino) return true
  const [ra, rb] = await Promise.all([realpath(a), realpath(b)])
  return ra === rb
}

/** Where the output goes, and what becomes of it when the run succeeds or fails. */
interface Output {
  stream: Writable
  commit(): Promise<void>
  discard(): Promise<void>
  /** For a signal or an exit: no turn of the event loop is left to do it asynchronously. */
  discardSync(): void
}

const standardOutput: Output = {
  stream: process.stdout,
  commit: async () => {},
  discard: async () => {},
  discardSync: () => {},
}

/**
 * A regular file, replaced only when the run succeeds: the output goes to a temporary file in
 * the same directory (so the rename is atomic), is fsync'd, then renamed over the target. Until
 * then the target is untouched, so a bad module, a trapping guest or a kill leaves it as it was.
 */
async function replacingFile(target: string, mode: number | undefined): Promise<Output> {
  const temp = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`)
  // 'wx': a file of that name that is not ours is never reused, nor later removed.
  const handle: FileHandle = await open(temp, 'wx').catch((err: NodeJS.ErrnoException) => {
    throw new Error(`cannot write ${target}: ${err.code ?? err.message} creating a temporary file beside it (${temp})`, { cause: err })
  })
  let settled = false
  const output: Output = {
    // FileSink fsyncs when it finishes, so the rename never exposes a file still in the page cache.
    stream: new FileSink(handle, 0) as unknown as Writable,
    async commit() {
      await handle.close()
      await rename(temp, target)
      settled = true
    },
    async discard() {
      if (settled) return
      settled = true
      output.stream.destroy()
      await handle.close().catch(() => {})
      await unlink(temp).catch(() => {})
    },
    discardSync() {
      if (settled) return
      settled = true
      try {
        unlinkSync(temp)
      } catch {
        // Already gone: nothing to clean up.
      }
    },
  }
  if (mode !== undefined) {
    // The replacement keeps the permissions the user gave the file it replaces.
    await handle.chmod(mode & 0o7777).catch(async (err: unknown) => {
      await output.discard()
      throw err
    })
  }
  return output
}

async function openOutput(path: string): Promise<Output> {
  const existing = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw err
  })
  if (existing?.isDirectory()) throw new UsageError(`-o ${path} is a directory; name a file to write`)
  // A device or a pipe (/dev/null, a FIFO) is written in place: renaming a file over it would
  // replace the device itself, and truncating one loses nothing.
  if (existing && !existing.isFile()) {
    const stream = createWriteStream(path)
    return { stream, commit: async () => {}, discard: async () => void stream.destroy(), discardSync: () => {} }
  }
  // Through a symlink, the file it points to is replaced and the link kept.
  const target = existing ? await realpath(path) : path
  return replacingFile(target, existing?.mode)
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (err) {
    process.stderr.write(`wasm-sandbox: ${(err as Error).message}\n\n${USAGE}\n`)
    return 2
  }
  const { values, tokens } = parsed
  // Positionals before -- are ours (module, input); after it, the program's arguments.
  const terminator = tokens.findIndex((t) => t.kind === 'option-terminator')
  const positionals = tokens.filter((t, i) => t.kind === 'positional' && (terminator < 0 || i < terminator)).map((t) => (t as { value: string }).value)
  const programArgs = terminator < 0 ? undefined : tokens.slice(terminator + 1).map((t) => (t as { value: string }).value)
  if (values.help || positionals.length < 1 || positionals.length > 2) {
    process.stderr.write(USAGE + '\n')
    return values.help ? 0 : 2
  }
  const [module, input] = positionals as [string, string | undefined]
  const fromFile = input !== undefined && input !== '-'
  const usageError = (err: unknown): boolean => {
    if (!(err instanceof UsageError || (isWasmSandboxError(err) && err.code === 'ERR_WASM_INVALID_OPTION'))) return false
    process.stderr.write(`wasm-sandbox: ${inFlags(err.message)}\n`)
    return true
  }

  // Everything that can be checked is checked before the output is opened, so a usage error
  // never costs the user an existing output file.
  let options: SandboxOptions
  let output: Output
  try {
    options = sandboxOptions(values)
    if (programArgs) options.wasi = { ...options.wasi, args: [basename(module), ...programArgs] }
    // A file is read as fast as it goes: cutting on a pause would only make chunk sizes depend on the disk.
    if (fromFile && options.maxLatency === undefined) options.maxLatency = Infinity
    resolveOptions(options)
    if (values.output === '') throw new UsageError('-o needs a file name')
    if (fromFile && values.output !== undefined && values.output !== '-' && (await sameFile(input, values.output))) {
      throw new UsageError(
        `-o ${values.output} is the input file ${input}; write to another file, then rename it over the input if that is what you want`,
      )
    }
    if (values.output !== undefined && values.output !== '-' && (await sameFile(module, values.output))) {
      throw new UsageError(`-o ${values.output} is the module ${module}; write the output to another file`)
    }
    // '-' is standard output, as it is standard input for the input.
    output = values.output === undefined || values.output === '-' ? standardOutput : await openOutput(values.output)
  } catch (err) {
    if (usageError(err)) return 2
    throw err
  }

  // A signal or an unexpected exit would otherwise leave the temporary file behind. The signal
  // is raised again once cleaned up, so whoever sent it sees the process die of it.
  const onSignal = (signal: NodeJS.Signals): void => {
    output.discardSync()
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    process.kill(process.pid, signal)
  }
  const onExit = (): void => {
    output.discardSync()
    // Only a run that never settled gets here (the listener is removed when it does): whatever
    // stalled it, exiting 0 would claim an output that was never written.
    process.stderr.write(`wasm-sandbox: exited before the run finished; ${values.output ?? 'the output'} is incomplete or unchanged\n`)
    process.exitCode = 1
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('exit', onExit)
  try {
    // Created just before the pipeline takes it, so a module that fails to load has someone to
    // report its error to. It can still refuse the options (a delimiter longer than the chunk).
    const stream = wasmTransform(module, options)
    await pipeline(fromFile ? createReadStream(input) : process.stdin, stream, output.stream)
    await output.commit()
    return 0
  } catch (err) {
    await output.discard()
    if (usageError(err)) return 2
    throw err
  } finally {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('exit', onExit)
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    const e = err as Error & { code?: string; exitCode?: number }
    // A reader that closed early (| head) is not a failure of ours.
    if (e.code === 'EPIPE') return
    // A WASI program's own exit status, as if it had been run directly; its stderr is already out.
    if (e.code === 'ERR_WASM_EXIT' && e.exitCode) {
      process.stderr.write(`wasm-sandbox: ${e.code}: the program exited with status ${e.exitCode}\n`)
      process.exitCode = Math.min(e.exitCode, 255)
      return
    }
    process.stderr.write(`wasm-sandbox: ${isWasmSandboxError(e) ? `${e.code}: ` : ''}${e.message}\n`)
    process.exitCode = 1
  },
)
