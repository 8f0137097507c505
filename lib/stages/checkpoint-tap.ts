import type { TransformCallback } from 'node:stream'
import { Transform } from 'readable-stream'
import type { Checkpoint, CheckpointInfo, CheckpointStorage } from '../checkpoint/types.js'
import { errors } from '../errors.js'
import { logger } from '../log.js'
import { resolveSaveTimeout } from '../options.js'
import type { Snapshot } from '../runners/runner.js'
import { emitSafely } from './emit-safely.js'

const log = logger('checkpoint')

export interface CheckpointTapOptions {
  /** Where checkpoints are saved. */
  storage: CheckpointStorage
  /** Hash of the options that change output, recorded so a resume with other options is refused. */
  optionsHash: string
  /** Stored with every checkpoint, as given. */
  metadata?: Record<string, unknown>
  /**
   * Called before a checkpoint is saved; resolves once the output up to `outputOffset` is durable
   * downstream (processFile fsyncs its output file here). Without it, a checkpoint is saved once
   * its output has passed the tap: at-least-once delivery from the last checkpoint.
   */
  commit?: (outputOffset: number) => Promise<void>
  /** Output bytes produced before this stream (a resumed stream). Default 0. */
  startOffset?: number
  /** Sequence number of the checkpoint this stream resumed from. Default 0. */
  startSequence?: number
  /** Bytes buffered on each side. Default 64 KiB. */
  highWaterMark?: number
  /**
   * Milliseconds one `storage.save` may take before the tap fails with ERR_WASM_CHECKPOINT_FAILED.
   * Default 30000; `Infinity` for none. `commit` is not timed: it waits for the sink, at its pace.
   */
  saveTimeout?: number
}

/**
 * Sits after the executor, counts the output position, and turns the executor's snapshots into
 * saved checkpoints. A snapshot records the output offset of its cut; it is saved only once the
 * output up to that offset has passed this stage (and, with `commit`, is the sink's): without
 * `commit`, output past the tap may still be in the buffers after it when the process dies, so
 * only `commit` makes a saved checkpoint never claim output the sink may not have (README,
 * "What a generic sink gets"). Saves run one at a time off the data
 * path; a newer snapshot replaces an older one still waiting, so at most three guest states
 * (waiting, ready, saving) are held at once.
 */
export class CheckpointTap extends Transform {
  /** Absolute output position: bytes that have passed the tap, plus those before a resume. */
  bytesOut: number
  checkpointsSaved = 0
  lastCheckpoint: CheckpointInfo | undefined = undefined
  private readonly options: CheckpointTapOptions
  private readonly saveTimeout: number
  /** Runs while `storage.save` does: the end of the stream waits on the save, so it must not wait for good. */
  private saveTimer: NodeJS.Timeout | undefined = undefined
  private sequence: number
  private waiting: Snapshot | undefined = undefined
  private ready: Snapshot | undefined = undefined
  private saving = false
  private flushCallback: TransformCallback | null = null

  constructor(options: CheckpointTapOptions) {
    const hwm = options.highWaterMark ?? 64 * 1024
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm })
    this.options = options
    this.saveTimeout = resolveSaveTimeout(options.saveTimeout)
    this.bytesOut = options.startOffset ?? 0
    this.sequence = options.startSequence ?? 0
  }

  /** A snapshot from the executor: saved once its output has gone by. */
  offer(snapshot: Snapshot): void {
    if (this.waiting) log('snapshot at input %d superseded before its output passed', this.waiting.inputOffset)
    this.waiting = snapshot
    this.promote()
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytesOut += chunk.length
    this.push(chunk)
    if (this.waiting) this.promote()
    callback()
  }

  override _flush(callback: TransformCallback): void {
    // The stream is complete: a checkpoint still waiting is moot, one being saved is let finish
    // (within saveTimeout).
    this.waiting = this.ready = undefined
    if (this.saving) this.flushCallback = callback
    else callback()
  }

  private promote(): void {
    const waiting = this.waiting
    if (!waiting || this.bytesOut < waiting.outputOffset) return
    this.waiting = undefined
    this.ready = waiting
    if (!this.saving) this.save()
  }

  private save(): void {
    const snapshot = this.ready!
    this.ready = undefined
    this.saving = true
    const checkpoint: Checkpoint = {
      version: 1,
      sequence: ++this.sequence,
      moduleHash: snapshot.moduleHash,
      optionsHash: this.options.optionsHash,
      inputOffset: snapshot.inputOffset,
      outputOffset: snapshot.outputOffset,
      timestamp: Date.now(),
      metadata: this.options.metadata ?? {},
      guest: snapshot.state,
    }
    const commit = this.options.commit
    // commit is user code: a synchronous throw must fail the save like a rejection does, not
    // escape into _transform or the executor's snapshot event.
    const durable = new Promise<void>((resolve) => resolve(commit?.(snapshot.outputOffset)))
    // Destroyed while the output was being made durable: the caller stopped this stream, and
    // storage hears nothing more from it.
    durable
      .then(() => (this.destroyed ? undefined : this.store(checkpoint)))
      .then(
        () => this.saved(checkpoint),
        (err: unknown) => {
          this.clearSaveTimer()
          this.saving = false
          this.destroy(errors.checkpointFailed(snapshot.inputOffset, err))
        },
      )
  }

  /** `storage.save`, against the clock: past saveTimeout the tap fails, whatever the save does later. */
  private store(checkpoint: Checkpoint): Promise<void> {
    const { storage } = this.options
    if (this.saveTimeout !== Infinity && !this.destroyed) {
      this.saveTimer = setTimeout(() => {
        this.saveTimer = undefined
        this.saving = false
        this.destroy(errors.checkpointSaveTimeout(storage, checkpoint.inputOffset, this.saveTimeout))
      }, this.saveTimeout)
      // A storage busy saving keeps the process alive through its own I/O; the timer must not.
      this.saveTimer.unref()
    }
    return storage.save(checkpoint)
  }

  private clearSaveTimer(): void {
    if (this.saveTimer) clearTimeout(this.saveTimer)
    this.saveTimer = undefined
  }

  private saved(checkpoint: Checkpoint): void {
    this.clearSaveTimer()
    this.saving = false
    if (this.destroyed) return
    const { guest: _guest, ...info } = checkpoint
    this.checkpointsSaved++
    this.lastCheckpoint = info
    log('checkpoint %d saved: input %d, output %d', info.sequence, info.inputOffset, info.outputOffset)
    emitSafely(this, 'checkpoint', info)
    if (this.destroyed) return
    if (this.ready) this.save()
    else if (this.flushCallback) {
      const callback = this.flushCallback
      this.flushCallback = null
      callback()
    }
  }

  override _destroy(err: Error | null, callback: (error: Error | null) => void): void {
    this.clearSaveTimer()
    this.waiting = this.ready = undefined
    this.flushCallback = null
    callback(err)
  }
}
