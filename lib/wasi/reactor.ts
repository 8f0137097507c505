import { wasmer } from './wasmer.js'
import type { GuestWasi, OutputSink } from '../guest/instance.js'
import type { LoadedGuest } from '../guest/load.js'
import { FileSystemImage } from './filesystem.js'
import { memoryViews, wasiImports, wasmerPreview1 } from './imports.js'
import type { WasiConfig } from './options.js'
import { ownPreview1 } from './own-preview1.js'
import { needsWasmer } from './program.js'

/**
 * WASI for an ABI v1 guest built with wasi-libc (a reactor): the same capability-scoped imports
 * as a command, with stdin at its end and stdout and stderr both diagnostics (`diagnostics`),
 * never stream output. With directories granted, call `initWasi(config)` first.
 */
export function reactorWasi(guest: LoadedGuest, config: WasiConfig, diagnostics: OutputSink): GuestWasi {
  const args = config.args ?? [guest.name.split(/[\\/]/).pop() || 'guest']
  const streams = { read: (): number => 0, write: (_fd: 1 | 2, memory: Uint8Array, ptr: number, length: number): void => diagnostics(memory, ptr, length) }
  if (!needsWasmer(config)) {
    return {
      imports: (memory) => {
        const views = memoryViews(memory)
        return wasiImports(ownPreview1(config, args, views), config, streams, views, { free: 0 })
      },
      attach: () => {},
    }
  }
  const fs = new FileSystemImage(config).mount()
  const preopens: Record<string, string> = {}
  for (const grant of config.preopens) preopens[grant.guestPath] = grant.guestPath
  const wasi = new (wasmer().WASI)({ args, env: config.env, preopens, fs: fs.fs })
  return {
    imports: (memory) => wasiImports(wasmerPreview1(wasi, guest.module), config, streams, memoryViews(memory), fs),
    attach: (instance) => void wasi.instantiate(instance, {}),
  }
}
