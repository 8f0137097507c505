/** The worker driver for ABI v1 guests: one GuestInstance, a chunk per `process_chunk` call. */
import { GuestInstance } from '../../guest/instance.js'
import type { DriverHost } from '../driver.js'
import { EXPORT_INIT, EXPORT_PROCESS, EXPORT_START } from '../protocol.js'

export function serve(host: DriverHost): never {
  const { data } = host
  host.enter(EXPORT_START, 0)
  const instance = new GuestInstance(data.guest, host.sink, data.limits)
  host.enter(EXPORT_INIT, 0)
  if (data.restore) instance.restore(data.restore)
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
