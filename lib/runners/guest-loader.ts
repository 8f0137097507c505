/**
 * `loadGuest`: where a guest's load runs, and the cache of loaded guests. A module of at most
 * `LOADER_LIMITS.inlineBytes` loads on the calling thread; a bigger one in a loader thread
 * (loader-threads.ts), so that the host's event loop is never blocked by it for more than a
 * few milliseconds at a time, and its compile time and parse heap are bounded there.
 */
import { setImmediate } from 'node:timers/promises'
import { compile, givenBytes, hashOf, locateModule, nameOf, precompiledGuest, type LoadedGuest, type LoadOptions, type ModuleBytes, type ModuleSource } from '../guest/load.js'
import { DEFAULT_LIMITS } from '../options.js'
import { LOADER_LIMITS, loaderThreads } from './loader-threads.js'

const CACHE_SIZE = 32
const cache = new Map<string, Promise<LoadedGuest>>()

/** Bytes copied to shared memory between two turns of the event loop: about a millisecond on a busy machine (fresh pages fault in). */
const COPY_SLICE = 256 * 1024

/**
 * Reads, validates and compiles a guest. Compiled modules are cached by content hash and
 * limit, so many streams over the same guest compile it once.
 */
export async function loadGuest(source: ModuleSource, options: LoadOptions = {}): Promise<LoadedGuest> {
  const name = nameOf(source)
  if (source instanceof WebAssembly.Module) return precompiledGuest(source, name)
  const maxSize = options.maxModuleSize ?? Infinity
  // A small module given as bytes is copied before the first await, so its caller may reuse
  // the buffer as soon as this returns; a big one's copy takes a few turns of the event loop.
  const found = typeof source === 'string' || source instanceof URL ? await locateModule(source, name, maxSize, LOADER_LIMITS.inlineBytes) : givenBytes(source, name, maxSize)
  const loaded = found.kind === 'bytes' && found.bytes.length <= LOADER_LIMITS.inlineBytes ? await loadHere(found, name, options) : await loadInThread(found, name, options)
  return loaded.name === name ? loaded : { ...loaded, name }
}

/** The cached guest for `hash` and these options, else the one `load` makes (cached in turn). */
function cached(hash: string, options: LoadOptions, load: () => Promise<LoadedGuest>): { guest: Promise<LoadedGuest>; hit: boolean } {
  const key = `${hash}:${options.memoryLimit ?? ''}`
  const hit = cache.get(key)
  if (hit) return { guest: hit, hit: true }
  const guest = load()
  cache.set(key, guest)
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!)
  guest.catch(() => {
    if (cache.get(key) === guest) cache.delete(key)
  })
  return { guest, hit: false }
}

function loadHere({ bytes, owned }: { bytes: Uint8Array; owned: boolean }, name: string, options: LoadOptions): Promise<LoadedGuest> {
  const hash = hashOf(bytes)
  // A caller's bytes are copied, so its mutating the buffer later cannot change what was validated.
  return cached(hash, options, () => compile(owned ? bytes : Uint8Array.prototype.slice.call(bytes), name, options, hash)).guest
}

async function loadInThread(found: ModuleBytes, name: string, options: LoadOptions): Promise<LoadedGuest> {
  const size = found.kind === 'bytes' ? found.bytes.length : found.size
  const input = found.kind === 'file' ? { path: found.path } : { shared: await sharedCopy(found.kind === 'bytes' ? [found.bytes] : found.parts, size) }
  const job = loaderThreads.start({
    input,
    size,
    name,
    memoryLimit: options.memoryLimit,
    maxModuleSize: options.maxModuleSize ?? Infinity,
    timeoutMs: options.loadTimeout ?? DEFAULT_LIMITS.loadTimeout,
  })
  const { guest, hit } = cached(await job.hashed, options, () => job.compile())
  if (hit) job.skip()
  return guest
}

/**
 * The bytes, copied to memory the loader thread can read, a slice per turn of the event loop
 * rather than in one long copy. The copy is what the thread hashes, checks and compiles, so a
 * caller changing its buffer during the load cannot make it compile anything it did not check.
 */
async function sharedCopy(parts: readonly Uint8Array[], size: number): Promise<SharedArrayBuffer> {
  const shared = new SharedArrayBuffer(size)
  const view = new Uint8Array(shared)
  let at = 0
  let sliced = 0
  for (const part of parts) {
    for (let from = 0; from < part.length; ) {
      const n = Math.min(part.length - from, COPY_SLICE - sliced)
      view.set(part.subarray(from, from + n), at)
      at += n
      from += n
      sliced += n
      if (sliced === COPY_SLICE) {
        await setImmediate()
        sliced = 0
      }
    }
  }
  return shared
}
