/**
 * wasmTransformStream's types as a TypeScript user meets them: a fetch body piped through it,
 * compiled (tsc --noEmit, strict) against dist/*.d.ts, with and without TypeScript's DOM library.
 * With the DOM library the global streams are the DOM's types; a pair typed with node:stream/web's
 * own classes did not fit `response.body.pipeThrough(...)` there.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { runNode } from './helpers/child.js'
import { repoRoot } from './helpers/reference.js'

const dir = mkdtempSync(join(tmpdir(), 'wasm-web-types-'))
after(() => rmSync(dir, { recursive: true, force: true }))

const consumer = `
import { wasmTransformStream, WasmSandboxError } from ${JSON.stringify(join(repoRoot, 'dist', 'index.js'))}
export async function upper(url: string): Promise<string> {
  const response = await fetch(url)
  const out = response.body!.pipeThrough(wasmTransformStream('upper.wasm'))
  await new Response('more').body!.pipeTo(wasmTransformStream('upper.wasm').writable)
  try {
    return await new Response(out).text()
  } catch (err) {
    if (err instanceof WasmSandboxError) return err.code
    throw err
  }
}
`

describe('wasmTransformStream types', () => {
  for (const lib of [['ES2022'], ['ES2022', 'DOM']]) {
    it(`a fetch body pipes through it (lib: ${lib.join(', ')})`, async () => {
      const name = lib.join('-')
      writeFileSync(join(dir, `${name}.ts`), consumer)
      const config = {
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          lib,
          types: ['node'],
          typeRoots: [join(repoRoot, 'node_modules', '@types')],
          strict: true,
          noEmit: true,
          // The consumer's code is what is checked here; the package's own .d.ts files are the
          // packaging item's (without DOM they name WebAssembly, declared in a file not shipped).
          skipLibCheck: true,
        },
        files: [`${name}.ts`],
      }
      writeFileSync(join(dir, `${name}.json`), JSON.stringify(config))
      const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc')
      const { code, stdout, stderr, timedOut } = await runNode([tsc, '-p', join(dir, `${name}.json`)], 120_000)
      assert.equal(timedOut, false)
      assert.equal(code, 0, stdout + stderr)
    })
  }
})
