import createDebug from 'debug'

/** One `debug` namespace per stage, so `DEBUG=wasm-sandbox:executor` shows just that one. */
export function logger(stage: string): createDebug.Debugger {
  return createDebug(`wasm-sandbox:${stage}`)
}
