import { createReadStream, fstatSync, unlinkSync } from 'node:fs'
import { chmod, rename, stat, unlink } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Writable } from 'node:stream'
import { processFile } from '../api/process-file.js'
import { sameFile } from '../api/same-file.js'
import { modulePath } from '../guest/load.js'
import { wasmTransform } from '../api/wasm-transform.js'
import { callStorage } from '../checkpoint/call-storage.js'
import { FileCheckpointStorage } from '../checkpoint/file-storage.js'
import type { SandboxStream } from '../compose.js'
import { isWasmSandboxError } from '../errors.js'
import { LOG_LEVELS, type GuestLogEntry } from '../guest/instance.js'
import { resolveOptions, type SandboxOptions } from '../options.js'
import { checkpointOptions, logLevel, sandboxOptions, UsageError, type RunFlags } from './options.js'
import { openOutput, outputTarget, standardInput, standardOutput, type Output } from './output.js'
import { ProgressLine } from './progress.js'
import { addHint, EXIT, report } from './report.js'

export interface RunRequest {
  module: string
  /** A file, or undefined / '-' for standard input. */
  input: string | undefined
  flags: RunFlags
  /** What followed `--`: a WASI program's arguments. */
  programArgs: string[] | undefined
}

const say = (line: string): void => void process.stderr.write(`wasm-sandbox: ${line}\n`)

/** Size of the input when it can be known: a file, or standard input redirected from one. */
async function inputSize(input: string | undefined): Promise<number | undefined> {
  if (input !== undefined) return (await stat(input).catch(() => undefined))?.size
  try {
    const s = fstatSync(0)
    return s.isFile() ? s.size : undefined
  } catch {
    return undefined
  }
}

/**
 * Installs signal and exit handlers that run `cleanup` (synchronously: no turn of the event
 * loop is left) and returns their removal. A signal is raised again once cleaned up, so whoever
 * sent it sees the process die of it.
 */
function onInterrupt(cleanup: () => void, outputName: string): () => void {
  const onSignal = (signal: NodeJS.Signals): void => {
    cleanup()
    remove()
    process.kill(process.pid, signal)
  }
  const onExit = (): void => {
    cleanup()
    // Only a run that never settled gets here (the listener is removed when it does): whatever
    // stalled it, exiting 0 would claim an output that was never written.
    say(`exited before the run finished; ${outputName} is incomplete or unchanged`)
    process.exitCode = 1
  }
  const remove = (): void => {
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
    process.removeListener('exit', onExit)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('exit', onExit)
  return remove
}

/**
 * A guest's log message on one line, with no control characters: an untrusted guest must not
 * move the cursor, recolour or retitle the user's terminal. A trailing newline is dropped.
 */
export function printable(message: string): string {
  return message
    .replace(/[\r\n]+$/, '')
    .replace(/[\x00-\x08\x0a-\x1f\x7f-\x9f]/g, (c) => (c === '\n' ? '\\n' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`))
}

/**
 * A WASI program's stderr bytes as they may reach a terminal: control bytes other than newline
 * and tab (ESC above all, and carriage return) written as `\xNN`, for the same reason as
 * `printable`. Only for a terminal: redirected to a file, stderr stays byte for byte.
 */
export function terminalSafe(chunk: Buffer): Buffer {
  let unsafe = false
  for (const byte of chunk) if ((byte < 0x20 && byte !== 0x0a && byte !== 0x09) || byte === 0x7f) unsafe = true
  if (!unsafe) return chunk
  const parts: string[] = []
  for (const byte of chunk) {
    parts.push((byte < 0x20 && byte !== 0x0a && byte !== 0x09) || byte === 0x7f ? `\\x${byte.toString(16).padStart(2, '0')}` : String.fromCharCode(byte))
  }
  return Buffer.from(parts.join(''), 'latin1')
}

function terminalSafeStream(to: NodeJS.WritableStream): Writable {
  return new Writable({ write: (chunk: Buffer, _encoding, callback) => void to.write(terminalSafe(chunk), callback) })
}

/** The `run` command: pipes the input through the guest. Resolves to the exit status. */
export async function run({ module, input: inputArg, flags, programArgs }: RunRequest): Promise<number> {
  const input = inputArg === '-' ? undefined : inputArg
  const output = flags.output === '-' ? undefined : flags.output

  // Everything that can be checked is checked before the output is opened, so a usage error
  // never costs the user an existing output file.
  const options = sandboxOptions(flags)
  if (programArgs) options.wasi = { ...options.wasi, args: [basename(module), ...programArgs] }
  // A file is read as fast as it goes: cutting on a pause would only make chunk sizes depend on the disk.
  if (input !== undefined && options.maxLatency === undefined) options.maxLatency = Infinity
  resolveOptions(options)
  const checkpoint = checkpointOptions(flags)
  if (output === '') throw new UsageError('-o needs a file name')
  if (checkpoint && input === undefined) throw new UsageError('--checkpoint-dir needs an input file: a resumed run reads it again from the checkpoint')
  if (checkpoint && output === undefined) throw new UsageError('--checkpoint-dir needs -o naming a file: a resumed run appends to it')
  if (input !== undefined && output !== undefined && (await sameFile(input, output))) {
    throw new UsageError(`-o ${output} is the input file ${input}; write to another file, then rename it over the input if that is what you want`)
  }
  // A module may be named by a file: URL; compared as the file it names.
  if (output !== undefined && (await sameFile(modulePath(module) ?? module, output))) {
    throw new UsageError(`-o ${output} is the module ${module}; write the output to another file`)
  }
  if (flags.inline) {
    for (const [flag, value] of [['--timeout', flags.timeout], ['--deadline', flags.deadline]] as const) {
      if (value !== undefined) {
        say(`warning: ${flag} does not apply with --inline: the guest runs on this thread, where nothing can stop it, so a guest that loops hangs the tool (leave out --inline for the time limit)`)
      }
    }
  }

  // The line would mangle output shown on the same terminal, so it is drawn only when the
  // output goes elsewhere.
  const showProgress = !flags.quiet && process.stderr.isTTY === true && !(output === undefined && process.stdout.isTTY)
  const progress = showProgress ? new ProgressLine(process.stderr, await inputSize(input)) : undefined
  // What else goes to the terminal (a WASI program's stderr, guest logs) steps around the line.
  const diagnostics = progress ? progress.passthrough() : process.stderr
  options.wasi = { ...options.wasi, stderr: process.stderr.isTTY === true ? terminalSafeStream(diagnostics) : diagnostics }
  const showLog = logLevel(flags.log)

  let stream: SandboxStream | undefined
  const attach = (created: SandboxStream): void => {
    stream = created
    created.on('log', (entry: GuestLogEntry) => {
      if (LOG_LEVELS.indexOf(entry.level) > showLog) return
      diagnostics.write(`wasm-sandbox: guest ${entry.level}: ${printable(entry.message)} (${entry.exportName} at input offset ${entry.offset})\n`)
    })
    progress?.track(() => created.metrics().bytesProcessed)
  }
  try {
    if (checkpoint) {
      await runCheckpointed(module, input!, output!, checkpoint, options, attach)
    } else {
      await runStream(module, input, output, options, attach)
    }
    progress?.stop(true)
    return EXIT.ok
  } catch (err) {
    // The line goes before the message, which goes before the stats: they stay the last line.
    progress?.stop(false)
    return report(err)
  } finally {
    if (flags.stats && stream) process.stderr.write(JSON.stringify(stream.metrics()) + '\n')
  }
}

/**
 * Reads of 4 MiB: each read is a thread-pool round trip that costs the main thread tens of
 * microseconds on this VM whatever its size (a plain Node copy of 512 MiB: 0.76 s at 1 MiB, 0.38
 * s at 4 MiB), and the chunker cuts a read into bufferSize chunks without copying.
 */
const READ_BYTES = 4 * 1024 * 1024

/** A plain run: the output is committed only when the whole pipeline succeeded. */
async function runStream(
  module: string,
  input: string | undefined,
  outputPath: string | undefined,
  options: SandboxOptions,
  attach: (stream: SandboxStream) => void,
): Promise<void> {
  // '-' is standard output, as it is standard input for the input.
  const output: Output = outputPath === undefined ? standardOutput() : await openOutput(outputPath)
  const removeHandlers = onInterrupt(() => output.discardSync(), outputPath ?? 'the output')
  try {
    // Created just before the pipeline takes it, so a module that fails to load has someone to
    // report its error to. It can still refuse the options (a delimiter longer than the chunk).
    const stream = wasmTransform(module, options)
    attach(stream)
    const source = input !== undefined ? createReadStream(input, { highWaterMark: READ_BYTES }) : standardInput(READ_BYTES)
    await pipeline(source, stream, output.stream)
    await output.commit()
  } catch (err) {
    await output.discard()
    throw err
  } finally {
    removeHandlers()
  }
}

/**
 * A run that survives a crash, through `processFile`: the output grows in a partial file
 * beside the target (`.out.txt.partial`), checkpoints go to the directory, and running the same
 * command again resumes from the newest one. Only a finished run is renamed over the target,
 * so an existing output file is untouched until then, as without checkpoints.
 */
async function runCheckpointed(
  module: string,
  input: string,
  outputPath: string,
  checkpoint: NonNullable<ReturnType<typeof checkpointOptions>>,
  options: SandboxOptions,
  attach: (stream: SandboxStream) => void,
): Promise<void> {
  const target = await outputTarget(outputPath)
  if (target.kind === 'device') throw new UsageError(`--checkpoint-dir needs -o naming a regular file, and ${outputPath} is not one`)
  const partial = join(dirname(target.real), `.${basename(target.real)}.partial`)
  const storage = new CheckpointDir(checkpoint.dir!, checkpoint.keep === undefined ? {} : { keep: checkpoint.keep })
  const held = await callStorage(storage, 'list', `Check --checkpoint-dir ${checkpoint.dir}: it must be a directory this user can read and write.`, () => storage.list())
  const latest = held[held.length - 1]
  const absoluteInput = resolve(input)
  if (latest && latest.metadata.input !== undefined && latest.metadata.input !== absoluteInput) {
    throw new UsageError(
      `--checkpoint-dir ${checkpoint.dir} holds checkpoints of a run on ${String(latest.metadata.input)}, not ${absoluteInput}; name another directory, or delete it to start afresh`,
    )
  }
  let resumable = latest !== undefined
  // Without a checkpoint the partial output is worth nothing: it is not left behind.
  const dropPartial = (): void => {
    if (resumable) return
    try {
      unlinkSync(partial)
    } catch {
      // Never created, or already gone.
    }
  }
  const place = async (): Promise<void> => {
    if (target.mode !== undefined) await chmod(partial, target.mode & 0o7777)
    await rename(partial, target.real)
  }
  const removeHandlers = onInterrupt(dropPartial, outputPath)
  try {
    await processFile(absoluteInput, partial, module, {
      ...options,
      checkpoint: {
        ...checkpoint,
        storage,
        onSave: () => {
          resumable = true
        },
      },
      onStream: attach,
    })
    await place()
  } catch (err) {
    if (storage.lastPruneFailed) {
      // The output was complete when the checkpoints could not be deleted.
      await place()
      addHint(err, `the output is in ${outputPath}; delete the checkpoints in ${checkpoint.dir} before the next run with it`)
    } else if (isWasmSandboxError(err) && err.code === 'ERR_WASM_CHECKPOINT_MISMATCH') {
      addHint(err, `the checkpoints in ${checkpoint.dir} are of a run with other options or another module: run it as it was, or delete them to start afresh`)
    } else if (resumable) {
      addHint(err, `the checkpoints in ${checkpoint.dir} are kept: run the same command again to resume`)
    } else {
      await unlink(partial).catch(() => {})
    }
    throw err
  } finally {
    removeHandlers()
  }
}

/**
 * The CLI's checkpoints, deleted at the end before the output is renamed into place (a crash in
 * between then starts the next run afresh, where the other order left checkpoints of an output
 * already gone). A delete that fails (a directory where a checkpoint file was) is remembered: the
 * output was complete by then, and is still put in place.
 */
class CheckpointDir extends FileCheckpointStorage {
  lastPruneFailed = false

  override async prune(keep: number): Promise<void> {
    try {
      await super.prune(keep)
    } catch (err) {
      this.lastPruneFailed = keep === 0
      throw err
    }
  }
}
