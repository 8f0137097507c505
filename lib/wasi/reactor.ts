import { WASI } from '@wasmer/wasi'
import type { GuestWasi, OutputSink } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import { FileSystemImage } from './filesystem.js'
import { wasiImports } from './imports.js'
import type { WasiConfig } from './options.js'

/**
 * WASI for an ABI v1 guest built with wasi-libc (a reactor): the same capability-scoped imports
 * as a command, with stdin at its end and stdout and stderr both diagnostics (`diagnostics`),
 * never stream output. Call `initWasi()` first.
 */
export function reactorWasi(guest: LoadedGuest, config: WasiConfig, diagnostics: OutputSink): GuestWasi {
  const fs = new FileSystemImage(config).mount()
  const preopens: Record<string, string> = {}
  for (const grant of config.preopens) preopens[grant.guestPath] = grant.guestPath
  const wasi = new WASI({ args: config.args ?? [guest.name.split(/[\\/]/).pop() || 'guest'], env: config.env, preopens, fs: fs.fs })
  const streams = { read: (): number => 0, write: (_fd: 1 | 2, memory: Uint8Array, ptr: number, length: number): void => diagnostics(memory, ptr, length) }
  return {
    imports: (memory) => wasiImports(wasi, guest.module, config, streams, memory, fs),
    attach: (instance) => void wasi.instantiate(instance, {}),
  }
}
