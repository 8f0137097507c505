/**
 * A guest's worker starts whatever Node options the host was started with. `--input-type` is
 * inherited by workers and broke their file entry (ERR_INPUT_TYPE_NOT_ALLOWED), so it is left
 * out; an explicit option list is validated by Node (V8 flags such as --expose-gc are refused
 * there, though inherited silently), so the host's options are passed as they are otherwise.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { describe, it } from 'node:test'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { example, repoRoot } from './helpers/reference.js'

const exec = promisify(execFile)
const index = pathToFileURL(`${repoRoot}/build/lib/index.js`).href
const script = `import(${JSON.stringify(index)}).then(async ({ createSandbox }) => {
  const out = await createSandbox({ isolation: 'worker' }).call(${JSON.stringify(example('upper.wasm'))}, 'hello')
  process.stdout.write(out)
})`

describe('worker guests under the host\'s Node options', () => {
  for (const options of [
    ['--input-type=module'],
    ['--input-type', 'module'],
    ['--expose-gc'],
    ['--expose-gc', '--input-type=module'],
    ['--enable-source-maps', '--input-type=commonjs'],
  ]) {
    it(`node ${options.join(' ')} -e: the guest runs in its worker`, async () => {
      const { stdout, stderr } = await exec(process.execPath, [...options, '-e', script], { cwd: repoRoot })
      assert.equal(stdout, 'HELLO', stderr)
    })
  }
})
