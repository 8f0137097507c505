/**
 * The worker driver for a WASI command over the whole stream: one run of `_start`. Its reads
 * from stdin take chunks from the input ring as they arrive (blocking while there are none), its
 * writes to stdout go to the output ring (blocking while the consumer is slow). The call clock
 * restarts at every read and write, so `limits.timeout` bounds computing between I/O, not the
 * run; output is bounded by the input read (`OutputBudget`). A program that exits before the end
 * of its input has the rest read and discarded.
 */
import { errors } from '../../errors.js'
import type { DriverHost } from '../driver.js'
import { EXPORT_START, EXPORT_WASI_START, IN_CHUNK, IN_FLUSH, IN_SNAPSHOT, OUT_DONE, OUT_FLUSHED } from '../protocol.js'
import { H_KIND, H_LENGTH, H_TOTAL } from '../ring.js'
import type { StandardStreams } from '../../wasi/imports.js'
import { initWasi, standardWrites, StderrTail, WasiRuntime } from '../../wasi/program.js'
import { OutputBudget } from '../../wasi/output-budget.js'

export async function serve(host: DriverHost): Promise<void> {
  const { data, input } = host
  const header = input.header
  const config = data.wasi!
  await initWasi(config)
  const tail = new StderrTail()
  /** Where the current frame's payload has been read to, and the chunk's bytes so far. */
  let framePos = 0
  let chunkRead = 0
  let offset = 0
  let ended = false

  /** The frame at the head of the ring, once it is there; false at the end of input. */
  const nextChunkFrame = (): boolean => {
    for (;;) {
      if (!input.peek()) {
        host.leave()
        host.nextFrame()
        host.enter(EXPORT_WASI_START, offset)
      }
      const kind = header[H_KIND]
      if (kind === IN_CHUNK) return true
      if (kind === IN_FLUSH) return false
      if (kind === IN_SNAPSHOT) throw errors.checkpointUnsupported(data.guest.name, 'a WASI program in stream mode cannot be captured in the middle of its run')
      throw new Error(`internal: unknown frame kind ${kind}`)
    }
  }

  const budget = new OutputBudget(data.guest.name, data.limits.maxOutputPerChunk, data.bufferSize)

  /** Done with the frame at the head: release it, and report the chunk when it is all read. */
  const finishFrame = (): void => {
    chunkRead += header[H_LENGTH]!
    const total = header[H_TOTAL]!
    const end = input.offsetOfFrame() + total
    input.consume()
    host.consumed()
    framePos = 0
    if (chunkRead === total) {
      chunkRead = 0
      budget.grant(total, end)
      host.writeFrame(OUT_DONE)
    }
  }

  const write = standardWrites(host.sink, host.stderr, tail, budget)
  const streams: StandardStreams = {
    read(memory, ptr, length, wait) {
      if (ended || length === 0) return 0
      if (!wait && !input.peek()) return 0
      if (!nextChunkFrame()) {
        ended = true
        return 0
      }
      offset = input.offsetOfFrame() + chunkRead + framePos
      const available = header[H_LENGTH]! - framePos
      const n = Math.min(length, available)
      input.copyPayload(memory, ptr, framePos, n)
      framePos += n
      if (framePos === header[H_LENGTH]) finishFrame()
      // Only input that moved counts as progress: a loop of empty reads must still time out.
      if (n > 0) host.enter(EXPORT_WASI_START, offset + n)
      return n
    },
    write(fd, memory, ptr, length) {
      write(fd, memory, ptr, length)
      // Output is progress; stderr and empty writes are not, or a program chattering to stderr
      // (or writing nothing in a loop) would never time out.
      if (fd === 1 && length > 0) host.enter(EXPORT_WASI_START, offset)
    },
  }

  // Instantiating runs the module's start function, which may loop: timed like any call.
  host.enter(EXPORT_START, 0)
  const program = new WasiRuntime(data.guest, config, streams, data.limits.memory).prepare()
  host.leave()
  host.ready()
  host.enter(EXPORT_WASI_START, 0)
  // Read when an error is made, so a trap says where in the input the program was (it said 0).
  const code = program.run({
    module: data.guest.name,
    exportName: '_start',
    get offset() {
      return offset
    },
  })
  host.leave()
  if (code !== 0) throw errors.exit({ module: data.guest.name, exportName: '_start', offset }, code, tail.text())
  // The program is done: the rest of the input is read and discarded, each chunk answered.
  for (;;) {
    host.nextFrame()
    const kind = header[H_KIND]
    if (kind === IN_CHUNK) {
      framePos = header[H_LENGTH]!
      finishFrame()
    } else if (kind === IN_FLUSH) {
      input.consume()
      host.writeFrame(OUT_FLUSHED)
      return
    } else if (kind === IN_SNAPSHOT) {
      throw errors.checkpointUnsupported(data.guest.name, 'a WASI program in stream mode cannot be captured in the middle of its run')
    }
  }
}
