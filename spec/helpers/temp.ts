/** Scratch directories that go away with the test that made them. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'

/**
 * A fresh directory under the system's temporary one (`<prefix>XXXXXX`), removed when the test
 * ends, whether it passed, failed or timed out. Not try/finally: a test that times out waiting on
 * a promise never reaches its finally, while its `t.after` hooks still run.
 */
export function tempDir(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}
