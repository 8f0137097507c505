import pumpify from 'pumpify'
import { pipeline } from 'readable-stream'
import { addAbortSignal, type Duplex, type Stream } from 'node:stream'
import type { LoadedGuest, ModuleSource } from './guest/load.js'
import { logger } from './log.js'
import type { ResolvedOptions } from './options.js'
import { Chunker } from './stages/chunker.js'
import { ChunkSizeTuner, type ChunkingReport } from './stages/chunk-size-tuner.js'
import { AUTO_BUFFER_SIZES } from './options.js'
import { createHash } from 'node:crypto'
import { errors } from './errors.js'
import { BackpressureGate } from './stages/backpressure-gate.js'
import { CheckpointTap } from './stages/checkpoint-tap.js'
import { WasmExecutor } from './stages/wasm-executor.js'
import { runnerChain } from './runners/chain.js'
import type { ConcurrencyReport, Snapshot } from './runners/runner.js'
import type { WorkerPool } from './runners/worker-pool.js'

const log = logger('compose')

/** What `stream.metrics()` reports. Offsets are absolute (a resumed stream counts from its checkpoint). */
export interface StreamMetrics {
  /** Input offset reached: bytes handed to the guest (or dropped before it). */
  bytesIn: number
  /** Input offset the guest has finished: `bytesIn` less the chunks still in flight to it. */
  bytesProcessed: number
  /** Output bytes the guest produced. */
  bytesOut: number
  /** Chunks handed to the guest. */
  chunks: number
  /** Milliseconds spent inside guest calls. */
  guestTimeMs: number
  /** Times the guest's output waited for the consumer. */
  backpressureWaits: number
  /** Chunks and bytes a lossy backpressure strategy dropped. */
  chunksDropped: number
  bytesDropped: number
  /** Chunks dropped by `recoveryStrategy: 'skip'`. */
  chunksSkipped: number
  checkpointsSaved: number
  /** Offsets of the last checkpoint saved. */
  lastCheckpoint: { sequence: number; inputOffset: number; outputOffset: number } | undefined
  /** With `maxConcurrency` past 1 or 'auto': instances running, whether chosen, why, what was measured. */
  concurrency?: ConcurrencyReport | undefined
  /** With `bufferSize: 'auto'`: the chunk size now, why, what was measured. */
  chunking?: ChunkingReport | undefined
}

/** The duplex a user gets: write input bytes, read guest output. */
export interface SandboxStream extends Duplex {
  /** The stages inside, in order; for inspection and tests. */
  readonly stages: readonly Stream[]
  /** Counters for this stream, read at call time. */
  metrics(): StreamMetrics
}

function collectMetrics(stages: readonly Stream[]): StreamMetrics {
  const executor = stages.find((s) => s instanceof WasmExecutor) as WasmExecutor | undefined
  const gate = stages.find((s) => s instanceof BackpressureGate) as BackpressureGate | undefined
  const tap = stages.find((s) => s instanceof CheckpointTap) as CheckpointTap | undefined
  const chunker = stages.find((s) => s instanceof Chunker) as Chunker | undefined
  const chunking = chunker && tuners.get(chunker)
  const last = tap?.lastCheckpoint
  return {
    bytesIn: executor?.bytesIn ?? 0,
    bytesProcessed: executor?.bytesProcessed ?? 0,
    bytesOut: executor?.bytesOut ?? 0,
    chunks: executor?.chunks ?? 0,
    guestTimeMs: executor?.guestTimeMs() ?? 0,
    backpressureWaits: executor?.backpressureWaits ?? 0,
    chunksDropped: gate?.stats.chunksDropped ?? 0,
    bytesDropped: gate?.stats.bytesDropped ?? 0,
    chunksSkipped: executor?.chunksSkipped ?? 0,
    checkpointsSaved: tap?.checkpointsSaved ?? 0,
    lastCheckpoint: last && { sequence: last.sequence, inputOffset: last.inputOffset, outputOffset: last.outputOffset },
    ...(executor?.concurrency() ? { concurrency: executor.concurrency() } : {}),
    ...(chunking ? { chunking: 'report' in chunking ? chunking.report() : chunking } : {}),
  }
}

type PumpifyInstance = InstanceType<typeof pumpify> & {
  _autoDestroy?: boolean
  cork(): void
  uncork(): void
}

const bundles = new Map<number, new () => PumpifyInstance>()

/** What Node's own streams give `end(cb)` on a stream destroyed before it finished. */
function streamDestroyed(): Error {
  return Object.assign(new Error('Cannot call end after a stream was destroyed'), { code: 'ERR_STREAM_DESTROYED' })
}

/** What Node's own streams give `end(cb)` on a stream that has finished. */
function alreadyFinished(): Error {
  return Object.assign(new Error('Cannot call end after a stream was finished'), { code: 'ERR_STREAM_ALREADY_FINISHED' })
}

/**
 * pumpify's bundle (a duplexify that writes to the first stage and reads from the last), with
 * the chain run by `pipeline()` instead of pump. The difference matters on failure: pump, and
 * so pumpify, turns a stage closed early into a clean close, silently truncating the user's
 * output; `pipeline()` reports it as ERR_STREAM_PREMATURE_CLOSE.
 */
function bundleClass(highWaterMark: number): new () => PumpifyInstance {
  let Bundle = bundles.get(highWaterMark)
  if (Bundle) return Bundle
  const Base = pumpify.ctor({ autoDestroy: false, destroy: false, objectMode: false, highWaterMark })
  class PipelineBundle extends (Base as unknown as new () => PumpifyInstance) {
    /**
     * Once destroyed, no 'end', 'finish' or 'data'. duplexify's destroy() goes around the
     * readable-stream 3 under it, whose states never learn the bundle is gone: it still emitted
     * the end of a last stage that was already ending (that stage's 'end' was queued before its
     * destroy), and output buffered in the bundle, with its end, to a consumer reading after the
     * destroy, all after 'error' and 'close'.
     */
    override emit(event: string | symbol, ...args: unknown[]): boolean {
      if (this.destroyed && (event === 'end' || event === 'finish' || event === 'data')) return false
      const emitted = super.emit(event, ...args)
      // 'close' once both sides are done, as Node's own streams do (autoDestroy): duplexify, built
      // with autoDestroy off so that a stage's errors stay fatal, never closed a stream that
      // succeeded, and code awaiting its 'close' waited for good.
      if ((event === 'end' || event === 'finish') && this.states()._readableState.endEmitted && this.states()._writableState.finished) {
        process.nextTick(() => this.destroyed || this.destroy())
      }
      return emitted
    }

    /** readable-stream 3's own record of where each side is. */
    private states(): { _readableState: { endEmitted: boolean }; _writableState: { finished: boolean } } {
      return this as unknown as ReturnType<PipelineBundle['states']>
    }

    /**
     * `end(cb)` calls back on 'finish', or on failure with the error, as Node's own streams do:
     * readable-stream 3 calls back only on 'finish', which a destroyed bundle never emits, so a
     * caller awaiting its end waited for good.
     */
    override end(...args: unknown[]): this {
      const callback = typeof args.at(-1) === 'function' ? (args.pop() as (err?: Error | null) => void) : undefined
      if (callback) this.whenEnded(callback)
      return (super.end as (...a: unknown[]) => this).apply(this, args)
    }

    private whenEnded(callback: (err?: Error | null) => void): void {
      const finished = this.states()._writableState.finished
      if (this.destroyed || finished) {
        // As Node's own: a stream that finished (and so closed) says so before that it is destroyed.
        process.nextTick(callback, finished ? alreadyFinished() : streamDestroyed())
        return
      }
      // No 'error' listener: an error nobody listens for must stay as loud as on Node's streams.
      const settle = (err?: Error): void => {
        this.removeListener('finish', onFinish)
        this.removeListener('close', onClose)
        callback(err)
      }
      const onFinish = (): void => settle()
      const onClose = (): void => settle(this.failure ?? streamDestroyed())
      this.once('finish', onFinish)
      this.once('close', onClose)
    }

    /** The error the bundle was destroyed with, for `end(cb)`. */
    private failure: Error | undefined

    override destroy(err?: Error, ...rest: unknown[]): this {
      if (err && !this.destroyed) this.failure = err
      ;(super.destroy as (...a: unknown[]) => unknown).call(this, err, ...rest)
      return this
    }

    override setPipeline(...args: unknown[]): void {
      const streams = (Array.isArray(args[0]) ? args[0] : args) as Stream[]
      let ended = false
      // Destroying the bundle must reach every stage (and so every worker).
      const onclose = (): void => {
        for (const s of streams) (s as Duplex).destroy()
      }
      this.on('close', onclose)
      this.on('prefinish', () => {
        if (!ended) this.cork()
      })
      ;(pipeline as unknown as (...a: unknown[]) => void)(...streams, (err: Error | null | undefined) => {
        this.removeListener('close', onclose)
        if (err) {
          log('pipeline failed: %s', err.message)
          this.destroy(err)
          return
        }
        // Destroyed after end() but before the last stage finished: pipeline() counts a stage
        // ended with nothing buffered as done. Uncorking would emit the held 'finish' after 'close'.
        if (this.destroyed) return
        ended = true
        // The chain is done writing but the last stage may still be read: keep its errors fatal.
        if (this._autoDestroy === false) this._autoDestroy = true
        this.uncork()
      })
      if (this.destroyed) {
        onclose()
        return
      }
      this.setWritable(streams[0] as unknown as Parameters<PumpifyInstance['setWritable']>[0])
      this.setReadable(streams[streams.length - 1] as unknown as Parameters<PumpifyInstance['setReadable']>[0])
    }
  }
  Bundle = PipelineBundle
  bundles.set(highWaterMark, Bundle)
  return Bundle
}

const tuners = new WeakMap<Chunker, ChunkSizeTuner | ChunkingReport>()

/**
 * `bufferSize: 'auto'`, except where the chunk is the unit of output: a WASI program run per
 * chunk (record mode without a delimiter) would give other output for other sizes.
 */
function tuneChunkSize(chunker: Chunker, executor: WasmExecutor, options: ResolvedOptions): void {
  if (options.wasi.mode === 'record' && !options.delimiter) {
    tuners.set(chunker, { bufferSize: chunker.bufferSize, auto: true, reason: 'a WASI program run per chunk: the chunk size is part of the output, so it stays', samples: [] })
    return
  }
  const tuner = new ChunkSizeTuner(chunker, () => executor.bytesIn)
  tuners.set(chunker, tuner)
  chunker.afterWrite = () => tuner.poll()
  executor.once('close', () => tuner.stop())
}

/** Stage events a user of the bundle needs to see, re-emitted on the bundle. */
const FORWARDED_EVENTS = ['chunk-error', 'checkpoint', 'drop', 'stderr', 'log'] as const

/** Bundles stages into one duplex, composed with `pipeline()`: errors and destroy reach all. */
export function composeStages(stages: Stream[], highWaterMark: number): SandboxStream {
  const Bundle = bundleClass(highWaterMark)
  const bundle = new Bundle()
  for (const stage of stages) {
    for (const event of FORWARDED_EVENTS) stage.on(event, (...args: unknown[]) => bundle.emit(event, ...args))
  }
  const frozen = Object.freeze([...stages])
  Object.defineProperty(bundle, 'stages', { value: frozen, enumerable: false })
  Object.defineProperty(bundle, 'metrics', { value: () => collectMetrics(frozen), enumerable: false })
  bundle.setPipeline(stages as never)
  return bundle as unknown as SandboxStream
}

/**
 * Hash of the options that change output: a checkpoint is only valid under the same ones.
 * `guestConfig` joins the key only when given, so checkpoints taken without one keep their hash.
 * With `bufferSize: 'auto'` the key holds 'auto': sizes are chosen as the stream goes, and a
 * resume is exact by input offset, as with maxLatency's cuts.
 */
export function outputOptionsHash(
  options: Pick<ResolvedOptions, 'bufferSize' | 'delimiter' | 'maxRecordSize'> & { autoBufferSize?: boolean; guestConfig?: Uint8Array | undefined },
): string {
  const { delimiter, maxRecordSize, guestConfig } = options
  const bufferSize = options.autoBufferSize ? 'auto' : options.bufferSize
  const fields: Record<string, unknown> = { bufferSize, delimiter: delimiter?.toString('hex') ?? null, maxRecordSize }
  if (guestConfig) fields.guestConfig = createHash('sha256').update(guestConfig).digest('hex')
  return createHash('sha256').update(JSON.stringify(fields)).digest('hex')
}

/**
 * The chain: Chunker → [BackpressureGate] → WasmExecutor → [CheckpointTap]. The gate is left
 * out while the strategy is `'block'` (Node's own backpressure already is that strategy) and the
 * tap while checkpoints are off: a stage with nothing to do still costs a hop per chunk.
 */
export function createSandboxStream(module: ModuleSource | LoadedGuest, options: ResolvedOptions, workers?: WorkerPool): SandboxStream {
  const { bufferSize, highWaterMark, checkpoint, resumeFrom } = options
  if (options.maxWorkers !== undefined && !workers) {
    throw errors.invalidOption('maxWorkers bounds the workers of all the streams of a sandbox: give it to createSandbox, not to one stream')
  }
  const optionsHash = outputOptionsHash(options)
  if (resumeFrom && resumeFrom.optionsHash !== optionsHash) {
    throw errors.checkpointMismatch(
      typeof module === 'string' ? module : '<module>',
      'it was taken with other output-changing options (bufferSize, delimiter, maxRecordSize or guestConfig)',
    )
  }
  const chunker = new Chunker({
    bufferSize,
    highWaterMark,
    maxRecordSize: options.maxRecordSize,
    maxLatency: options.maxLatency, // left out of outputOptionsHash on purpose: see ResolvedOptions
    startOffset: resumeFrom?.inputOffset ?? 0,
    ...(options.delimiter ? { delimiter: options.delimiter } : {}),
  })
  const runner = runnerChain({
    isolation: options.isolation,
    recovery: options.recoveryStrategy,
    stateless: options.stateless,
    concurrency: options.maxConcurrency,
    deadline: options.limits.deadline,
    snapshots: checkpoint && {
      interval: checkpoint.interval,
      every: checkpoint.every,
      inputOffset: resumeFrom?.inputOffset ?? 0,
      outputOffset: resumeFrom?.outputOffset ?? 0,
    },
  })
  const executor = new WasmExecutor(module, {
    // 'auto' may grow chunks to the largest size: the guest's region is made for it, the worker's
    // queue and rings for the size it starts at (and room for two of the largest).
    bufferSize: options.autoBufferSize ? AUTO_BUFFER_SIZES.at(-1)! : bufferSize,
    chunkSize: bufferSize,
    highWaterMark,
    limits: options.limits,
    maxInFlight: options.flowControl.maxInFlight,
    runner,
    wasi: options.wasi,
    guestConfig: options.guestConfig,
    ...(resumeFrom ? { resumeFrom } : {}),
    ...(workers ? { workers } : {}),
  })
  const stages: Stream[] = [chunker as unknown as Stream]
  if (options.backpressure !== 'block') {
    stages.push(
      new BackpressureGate({ strategy: options.backpressure, flowControl: options.flowControl, highWaterMark }) as unknown as Stream,
    )
  }
  stages.push(executor as unknown as Stream)
  if (options.autoBufferSize) tuneChunkSize(chunker, executor, options)
  if (checkpoint) {
    const tap = new CheckpointTap({
      storage: checkpoint.storage,
      optionsHash,
      highWaterMark,
      startOffset: resumeFrom?.outputOffset ?? 0,
      startSequence: resumeFrom?.sequence ?? 0,
      ...(checkpoint.metadata ? { metadata: checkpoint.metadata } : {}),
      ...(checkpoint.commit ? { commit: checkpoint.commit } : {}),
      saveTimeout: checkpoint.saveTimeout,
    })
    executor.on('snapshot', (snapshot: Snapshot) => tap.offer(snapshot))
    stages.push(tap as unknown as Stream)
  }
  const stream = composeStages(stages, highWaterMark)
  // Node's own: destroys the stream (every stage, the worker with it) with an AbortError.
  if (options.signal) addAbortSignal(options.signal, stream)
  return stream
}
