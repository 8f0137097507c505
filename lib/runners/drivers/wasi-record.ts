/**
 * The worker driver for a WASI command run once per record (per chunk): stdin is that chunk,
 * stdout its output, and every run gets a fresh instance, so nothing leaks between records. The
 * next instance is prepared right after a run, while the main thread is still sending input.
 * A record run keeps no state, so a snapshot is empty and a restore has nothing to do. Output
 * of the runs in one chunk is reported with that chunk.
 */
import { errors } from '../../errors.js'
import type { DriverHost } from '../driver.js'
import { EXPORT_WASI_START, IN_CHUNK, IN_FLUSH, IN_SNAPSHOT, OUT_DONE, OUT_FLUSHED } from '../protocol.js'
import { H_KIND, H_LENGTH, H_TOTAL } from '../ring.js'
import type { StandardStreams } from '../../wasi/imports.js'
import { initWasi, standardWrites, StderrTail, WasiRuntime } from '../../wasi/program.js'

export async function serve(host: DriverHost): Promise<never> {
  const { data, input } = host
  const header = input.header
  const config = data.wasi!
  await initWasi(config)
  let record = Buffer.allocUnsafe(Math.min(data.bufferSize, 1024 * 1024))
  let length = 0
  let pos = 0
  let limit = 0
  const delimiter = config.delimiter && Buffer.from(config.delimiter)
  const tail = new StderrTail()

  const streams: StandardStreams = {
    read(memory, ptr, want) {
      const n = Math.min(want, limit - pos)
      memory.set(record.subarray(pos, pos + n), ptr)
      pos += n
      return n
    },
    write: standardWrites(host.sink, host.stderr, tail),
  }
  const runtime = new WasiRuntime(data.guest, config, streams, data.limits.memory)
  const prepare = () => runtime.prepare()

  let next = prepare()
  host.ready()
  for (;;) {
    host.nextFrame()
    const kind = header[H_KIND]
    if (kind === IN_CHUNK) {
      const total = header[H_TOTAL]!
      const offset = input.offsetOfFrame()
      if (record.length < total) record = Buffer.allocUnsafe(total)
      input.copyPayload(record, length)
      length += header[H_LENGTH]!
      input.consume()
      host.consumed()
      if (length < total) continue
      // A chunk holds whole records (the chunker never cuts one): a run for each.
      let start = 0
      while (start < total) {
        const cut = delimiter ? record.subarray(start, total).indexOf(delimiter) : -1
        const end = cut < 0 ? total : start + cut + delimiter!.length
        pos = start
        limit = end
        tail.reset()
        const site = { module: data.guest.name, exportName: '_start', offset: offset + start }
        host.enter(EXPORT_WASI_START, site.offset)
        const code = next.run(site)
        host.leave()
        if (code !== 0) throw errors.exit(site, code, tail.text())
        next = prepare()
        start = end
      }
      length = 0
      host.writeFrame(OUT_DONE)
    } else if (kind === IN_SNAPSHOT) {
      input.consume()
      host.postSnapshot({ memory: new Uint8Array(0), globals: [], region: { ptr: 0, size: 0 } })
    } else if (kind === IN_FLUSH) {
      input.consume()
      host.writeFrame(OUT_FLUSHED)
    } else {
      throw new Error(`internal: unknown frame kind ${kind}`)
    }
  }
}
