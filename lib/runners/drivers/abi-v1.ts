/** The worker driver for ABI v1 guests: one GuestInstance, a chunk per `process_chunk` call. */
import { GuestInstance, type GuestWasi } from '../../guest/instance.js'
import type { DriverHost } from '../driver.js'
import { EXPORT_INIT, EXPORT_PROCESS, EXPORT_START } from '../protocol.js'
import { hasState } from '../runner.js'

export async function serve(host: DriverHost): Promise<void> {
  const { data } = host
  let wasi: GuestWasi | undefined
  if (data.guest.abi.wasiImports.length > 0) {
    // Loaded only for a reactor: every worker's start-up pays for what it imports.
    const [{ initWasi }, { reactorWasi }] = await Promise.all([import('../../wasi/program.js'), import('../../wasi/reactor.js')])
    await initWasi(data.wasi)
    wasi = reactorWasi(data.guest, data.wasi!, host.stderr)
  }
  host.enter(EXPORT_START, 0)
  const instance = new GuestInstance(data.guest, host.sink, data.limits, wasi, { config: data.guestConfig, log: host.log })
  host.enter(EXPORT_INIT, 0)
  if (hasState(data.restore)) instance.restore(data.restore)
  else instance.init()
  host.enter(EXPORT_PROCESS, 0)
  instance.reserve(data.bufferSize)
  host.leave()
  host.ready()
  return host.serveChunks({
    region: (total, offset) => instance.inputRegion(total, offset),
    memory: () => instance.memoryView(),
    process: (total, offset) => instance.processRegion(total, offset),
    flush: (offset) => instance.flush(offset),
    snapshot: () => instance.snapshot(),
  })
}
