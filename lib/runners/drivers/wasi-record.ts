/**
 * The worker driver for a WASI command run once per record (per chunk): stdin is that record,
 * stdout its output, and every run gets a fresh instance, so nothing leaks between records. The
 * next instance is prepared right after a run, while the main thread is still sending input.
 * Chunks arrive through the host's chunk loop, like ABI v1 chunks; a record run keeps no state,
 * so a snapshot is empty and a restore has nothing to do. Output of the runs in one chunk is
 * reported with that chunk.
 */
import { errors } from '../../errors.js'
import type { DriverHost } from '../driver.js'
import { EXPORT_START, EXPORT_WASI_START } from '../protocol.js'
import { noState } from '../runner.js'
import type { StandardStreams } from '../../wasi/imports.js'
import { initWasi, standardWrites, StderrTail, WasiRuntime } from '../../wasi/program.js'
import { OutputBudget } from '../../wasi/output-budget.js'

export async function serve(host: DriverHost): Promise<void> {
  const { data } = host
  const config = data.wasi!
  await initWasi(config)
  let record = new Uint8Array(Math.min(data.bufferSize, 1024 * 1024))
  let pos = 0
  let limit = 0
  const delimiter = config.delimiter && Buffer.from(config.delimiter)
  const tail = new StderrTail()
  const budget = new OutputBudget(data.guest.name, data.limits.maxOutputPerChunk, data.bufferSize)

  const streams: StandardStreams = {
    read(memory, ptr, want) {
      const n = Math.min(want, limit - pos)
      memory.set(record.subarray(pos, pos + n), ptr)
      pos += n
      return n
    },
    write: standardWrites(host.sink, host.stderr, tail, budget),
  }
  const runtime = new WasiRuntime(data.guest, config, streams, data.limits.memory)
  // Instantiating runs the module's start function, which may loop: timed like any call.
  host.enter(EXPORT_START, 0)
  let next = runtime.prepare()
  host.leave()
  host.ready()
  return host.serveChunks({
    region(total) {
      if (record.length < total) record = new Uint8Array(total)
      return 0
    },
    memory: () => record,
    // A chunk holds whole records (the chunker never cuts one): a run for each.
    process(total, offset) {
      budget.reset(total, offset)
      const chunk = Buffer.from(record.buffer, record.byteOffset, total)
      for (let start = 0; start < total; ) {
        const cut = delimiter ? chunk.indexOf(delimiter, start) : -1
        const end = cut < 0 ? total : cut + delimiter!.length
        pos = start
        limit = end
        tail.reset()
        const site = { module: data.guest.name, exportName: '_start', offset: offset + start }
        host.enter(EXPORT_WASI_START, site.offset)
        const code = next.run(site)
        if (code !== 0) throw errors.exit(site, code, tail.text())
        next = runtime.prepare()
        start = end
      }
    },
    flush() {},
    snapshot: noState,
  })
}
