/**
 * @wasmer/wasi, loaded only when a program is granted directories (it serves the in-memory file
 * system). Loading it and compiling its wasm costs a worker about 100 ms (bench/wasi.ts), so a
 * program without grants never pays it. Its ESM build loads faster than the CommonJS `main`.
 */
type Wasmer = typeof import('@wasmer/wasi')

let loaded: Wasmer | undefined
let loading: Promise<void> | undefined

const ESM_BUILD = '@wasmer/wasi/dist/Library.esm.min.js'

export function loadWasmer(): Promise<void> {
  loading ??= (import(ESM_BUILD) as Promise<Wasmer>).then(async (module) => {
    await module.init()
    loaded = module
  })
  return loading
}

/** The loaded library; `loadWasmer()` must have resolved. */
export function wasmer(): Wasmer {
  if (!loaded) throw new Error('internal: @wasmer/wasi used before loadWasmer() resolved')
  return loaded
}
