import { createReadStream } from 'node:fs'
import { open, stat } from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import { FileCheckpointStorage } from '../checkpoint/file-storage.js'
import { FileSink } from '../checkpoint/file-sink.js'
import type { SandboxStream } from '../compose.js'
import type { CheckpointInfo, CheckpointStorage } from '../checkpoint/types.js'
import { errors } from '../errors.js'
import type { ModuleSource } from '../guest/load.js'
import { logger } from '../log.js'
import { DEFAULT_BUFFER_SIZE, type SandboxOptions } from '../options.js'
import { wasmTransform } from './wasm-transform.js'

const log = logger('process-file')

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
  const storage = checkpoint
    ? (checkpoint.storage ?? new FileCheckpointStorage(checkpoint.dir, { keep: checkpoint.keep ?? 3 }))
    : undefined
  const latest = await storage?.loadLatest()
  if (latest) {
    const size = await stat(output).then((s) => s.size, () => -1)
    if (size < latest.outputOffset) {
      throw errors.checkpointMismatch(
        output,
        `the output file has ${size < 0 ? 'gone' : `${size} bytes`}, fewer than the ${latest.outputOffset} the checkpoint recorded`,
      )
    }
    log('resuming %s at input %d, output %d (checkpoint %d)', input, latest.inputOffset, latest.outputOffset, latest.sequence)
  }
  const file = await open(output, latest ? 'r+' : 'w')
  let saved = 0
  try {
    await file.truncate(latest?.outputOffset ?? 0)
    const sink = new FileSink(file, latest?.outputOffset ?? 0)
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
              metadata: { input, output, ...checkpoint!.metadata },
              commit: (offset: number) => sink.durable(offset),
            },
          }
        : {}),
      ...(latest ? { resumeFrom: latest } : {}),
    })
    onStream?.(stream)
    stream.on('checkpoint', (info: CheckpointInfo) => {
      saved++
      checkpoint?.onSave?.(info)
    })
    const source = createReadStream(input, {
      start: latest?.inputOffset ?? 0,
      highWaterMark: rest.bufferSize === 'auto' ? 256 * 1024 : (rest.bufferSize ?? DEFAULT_BUFFER_SIZE),
    })
    await pipeline(source, stream, sink as unknown as NodeJS.WritableStream)
    const outputBytes = sink.position
    await storage?.prune(0)
    const { guest: _guest, ...resumedFrom } = latest ?? ({} as NonNullable<typeof latest>)
    return { resumedFrom: latest ? resumedFrom : undefined, checkpointsSaved: saved, outputBytes }
  } finally {
    await file.close()
  }
}
