/**
 * The WebAssembly types our public declarations name, declared for users whose TypeScript
 * `lib` has no DOM (the usual Node setup: `@types/node` does not declare the WebAssembly
 * namespace). Interfaces only, and empty: they merge with lib.dom's full declarations when those
 * are present, and never conflict with them. Imported for its types by the modules that need it.
 */
declare global {
  namespace WebAssembly {
    interface Module {}
    interface Memory {}
    interface Instance {}
  }
}

export {}
