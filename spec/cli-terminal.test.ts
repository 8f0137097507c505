/** What a WASI program's stderr may do to the user's terminal through the CLI: nothing. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { terminalSafe } from '../lib/cli/run.js'

describe('CLI: a WASI program writing to a terminal', () => {
  it('escape sequences, carriage returns and other control bytes are shown, not obeyed', () => {
    const hostile = Buffer.from('\x1b]0;pwned\x07\x1b[2J\rover\x7f', 'latin1')
    assert.equal(terminalSafe(hostile).toString('latin1'), '\\x1b]0;pwned\\x07\\x1b[2J\\x0dover\\x7f')
  })

  it('text, newlines, tabs and UTF-8 pass unchanged (the same buffer when nothing needs escaping)', () => {
    const text = Buffer.from('line one\n\tcafé ✓\n')
    assert.equal(terminalSafe(text), text)
    const mixed = Buffer.from('é\x1b✓')
    assert.equal(terminalSafe(mixed).toString(), 'é\\x1b✓')
  })
})
