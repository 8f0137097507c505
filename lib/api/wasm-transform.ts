import { createSandboxStream, type SandboxStream } from '../compose.js'
import type { ModuleSource } from '../guest/load.js'
import { resolveOptions, type SandboxOptions } from '../options.js'

/**
 * The one-liner: a duplex that pipes bytes through the guest.
 *
 * ```js
 * await pipeline(fs.createReadStream(a), wasmTransform('upper.wasm'), fs.createWriteStream(b))
 * ```
 */
export function wasmTransform(module: ModuleSource, options?: SandboxOptions): SandboxStream {
  return createSandboxStream(module, resolveOptions(options))
}
