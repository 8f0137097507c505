import { constants, createReadStream } from 'node:fs'
import { open, stat, type FileHandle } from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import { callStorage } from '../checkpoint/call-storage.js'
import { FileCheckpointStorage } from '../checkpoint/file-storage.js'
import { FileSink } from '../checkpoint/file-sink.js'
import type { SandboxStream } from '../compose.js'
import type { CheckpointInfo, CheckpointStorage } from '../checkpoint/types.js'
import { errors } from '../errors.js'
import { modulePath, type ModuleSource } from '../guest/load.js'
import { logger } from '../log.js'
import { checkStorage, DEFAULT_BUFFER_SIZE, rejectUnknown, type SandboxOptions } from '../options.js'
import { sameFile } from './same-file.js'
import { wasmTransform } from './wasm-transform.js'

const log = logger('process-file')

/** processFile's own: a typo must not fall back to a default silently, as in wasmTransform's options. */
const CHECKPOINT_KEYS = new Set<string>(['dir', 'storage', 'interval', 'every', 'keep', 'metadata', 'onSave', 'saveTimeout'])

export interface ProcessFileOptions extends Omit<SandboxOptions, 'checkpoint' | 'resumeFrom'> {
  checkpoint?: {
    /** Directory for the checkpoints (created if missing). */
    dir: string
    /** Use this storage instead of files in `dir` (tests, or a storage that wraps the file one). */
    storage?: CheckpointStorage
    /** Milliseconds between checkpoints. Default `checkpointInterval` (5000). */
    interval?: number
    /** Also checkpoint after this many input bytes. */
    every?: number
    /** Checkpoints to keep. Default 3. */
    keep?: number
    metadata?: Record<string, unknown>
    /** Called after each checkpoint is saved (progress reporting). */
    onSave?: (checkpoint: CheckpointInfo) => void
    /** Milliseconds one save may take before the run fails (ERR_WASM_CHECKPOINT_FAILED). Default 30000; `Infinity` for none. */
    saveTimeout?: number
  }
  /**
   * Called with the stream once it is created, before any input flows: to read its
   * `metrics()` as it runs (a progress display) or when it is done.
   */
  onStream?: (stream: SandboxStream) => void
}

export interface ProcessFileResult {
  /** The checkpoint this run resumed from, if any. */
  resumedFrom: CheckpointInfo | undefined
  /** Checkpoints saved by this run. */
  checkpointsSaved: number
  /** Size of the output file. */
  outputBytes: number
}

/**
 * Bytes per read of the input, without checkpoints. Each read or write is a thread-pool round
 * trip that costs the main thread tens of microseconds here whatever its size: a chunk (64 KiB)
 * at a time, `upper` on 512 MiB in RAM took 1.8-2.1 s; reads of 4 MiB and 1 MiB of output
 * buffered, 0.9-1.1 s. The chunker cuts reads into bufferSize chunks as before, so the guest sees
 * the same chunks (with processFile's default `maxLatency: Infinity`) and writes the same output.
 * With checkpoints the I/O stays a chunk at a time: a checkpoint is saved once the output before
 * it is durable, and with 4 MiB of output buffered a run saved a fraction of the checkpoints
 * `every` asks for (the newest snapshot supersedes one still waiting), so a crash lost more work.
 */
const FILE_READ_BYTES = 4 * 1024 * 1024
/** Output buffered without checkpoints: a byte count, so a MiB of one-line emits is many Buffers. */
const FILE_WRITE_BYTES = 1024 * 1024

/** A chunk's bytes, for the input's reads: 'auto' reads its middle size. */
function chunkBytes(bufferSize: SandboxOptions['bufferSize']): number {
  return bufferSize === 'auto' ? 256 * 1024 : (bufferSize ?? DEFAULT_BUFFER_SIZE)
}

/**
 * Pipes a file through a guest into another file; with `checkpoint: { dir }` it survives a
 * crash: run it again and it resumes from the newest intact checkpoint, reading the input from
 * the checkpoint's input offset, truncating the output to its output offset and appending.
 * A checkpoint is saved only after the output up to its offset is fsync'd, so the output is
 * byte-identical to a run that never crashed (exactly-once, for files). On success the
 * checkpoints are deleted, so running it again starts afresh.
 */
export async function processFile(
  input: string,
  output: string,
  module: ModuleSource,
  options: ProcessFileOptions = {},
): Promise<ProcessFileResult> {
  const { checkpoint, onStream, ...rest } = options
  if (await sameFile(input, output)) {
    throw errors.invalidOption(`the output ${output} is the input file ${input}: writing it would destroy the input as it is read; write to another file`)
  }
  const moduleFile = modulePath(module)
  if (moduleFile !== undefined && (await sameFile(moduleFile, output))) {
    throw errors.invalidOption(`the output ${output} is the module ${String(module)}; write the output to another file`)
  }
  if (checkpoint !== undefined && (typeof checkpoint !== 'object' || checkpoint === null || (typeof checkpoint.dir !== 'string' && checkpoint.storage === undefined))) {
    throw errors.invalidOption('checkpoint needs dir, the directory its checkpoints go to (or a storage)')
  }
  if (checkpoint !== undefined) rejectUnknown('checkpoint option', checkpoint, CHECKPOINT_KEYS)
  if (checkpoint?.storage !== undefined) checkStorage(checkpoint.storage)
  const storage = checkpoint
    ? (checkpoint.storage ?? new FileCheckpointStorage(checkpoint.dir, { keep: checkpoint.keep ?? 3 }))
    : undefined
  const latest = storage && (await callStorage(storage, 'loadLatest', 'The output was not touched: fix the checkpoint storage and run again.', () => storage.loadLatest()))
  // What the input was, so a resume can tell it has not changed since (size and modification time).
  const inputStat = storage ? await stat(input).catch(() => undefined) : undefined
  const inputIdentity = inputStat && { inputSize: inputStat.size, inputMtimeMs: inputStat.mtimeMs }
  if (latest) {
    const was = latest.metadata as { inputSize?: unknown; inputMtimeMs?: unknown } | undefined
    if (inputIdentity && typeof was?.inputSize === 'number' && (was.inputSize !== inputIdentity.inputSize || was.inputMtimeMs !== inputIdentity.inputMtimeMs)) {
      throw errors.checkpointMismatch(
        input,
        `the input file changed since the checkpoint was taken (${was.inputSize} bytes then, ${inputIdentity.inputSize} now, or modified since): resuming would mix two inputs. Delete the checkpoints to start over`,
      )
    }
    const size = await stat(output).then((s) => s.size, () => -1)
    if (size < latest.outputOffset) {
      throw errors.checkpointMismatch(
        output,
        `the output file has ${size < 0 ? 'gone' : `${size} bytes`}, fewer than the ${latest.outputOffset} the checkpoint recorded`,
      )
    }
    log('resuming %s at input %d, output %d (checkpoint %d)', input, latest.inputOffset, latest.outputOffset, latest.sequence)
  }
  // The stream first: its options are checked as it is made, before the output is touched.
  let sink: FileSink | undefined
  const stream = wasmTransform(module, {
    // A file never pauses the way a live source does: waiting on a slow disk must not cut a
    // short chunk and change what a guest sensitive to chunk boundaries writes.
    maxLatency: Infinity,
    ...rest,
    ...(storage
      ? {
          checkpoint: {
            storage,
            ...(checkpoint!.interval !== undefined ? { interval: checkpoint!.interval } : {}),
            ...(checkpoint!.every !== undefined ? { every: checkpoint!.every } : {}),
            ...(checkpoint!.saveTimeout !== undefined ? { saveTimeout: checkpoint!.saveTimeout } : {}),
            metadata: { input, output, ...inputIdentity, ...checkpoint!.metadata },
            commit: (offset: number) => sink!.durable(offset),
          },
        }
      : {}),
    ...(latest ? { resumeFrom: latest } : {}),
  })
  let file: FileHandle | undefined
  try {
    // Not truncated yet: the sink cuts it once there is output, so a run that fails before any
    // (a module that does not load, a guest that traps in init) leaves the file as it was.
    file = await open(output, latest ? 'r+' : constants.O_WRONLY | constants.O_CREAT)
    onStream?.(stream)
  } catch (err) {
    stopUnread(stream, err as Error)
    await file?.close()
    throw err
  }
  let saved = 0
  try {
    sink = new FileSink(file, latest?.outputOffset ?? 0, storage ? undefined : FILE_WRITE_BYTES, true)
    stream.on('checkpoint', (info: CheckpointInfo) => {
      saved++
      checkpoint?.onSave?.(info)
    })
    const source = createReadStream(input, {
      start: latest?.inputOffset ?? 0,
      highWaterMark: storage ? chunkBytes(rest.bufferSize) : Math.max(FILE_READ_BYTES, chunkBytes(rest.bufferSize)),
    })
    await pipeline(source, stream, sink as unknown as NodeJS.WritableStream)
    const outputBytes = sink.position
    if (storage) {
      await callStorage(
        storage,
        'prune',
        'The output is complete, but its checkpoints are still there: delete them, or a run with them resumes from the last one instead of starting afresh.',
        () => storage.prune(0),
      )
    }
    const { guest: _guest, ...resumedFrom } = latest ?? ({} as NonNullable<typeof latest>)
    return { resumedFrom: latest ? resumedFrom : undefined, checkpointsSaved: saved, outputBytes }
  } finally {
    await file.close()
  }
}

/** A stream that will never be piped: destroyed with the error the caller is given instead. */
function stopUnread(stream: SandboxStream, err: Error): void {
  // The error goes to the caller; here it must not be an unhandled 'error' that ends the process.
  stream.on('error', () => {})
  stream.destroy(err)
}
