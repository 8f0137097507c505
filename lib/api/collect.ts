import type { SandboxStream } from '../compose.js'

/**
 * Ends `stream` with `input` (with nothing when undefined) and reads all it outputs, joined. It
 * listens before it writes: a stream destroyed as it was made (by a signal already aborted)
 * reports its error here, where it rejected with ERR_STREAM_DESTROYED before and then ended the
 * process with an unhandled 'error'. A stream that closes without ending (destroyed without an
 * error) rejects too: its output would be cut short.
 */
export async function endAndCollect(stream: SandboxStream, input: Buffer | undefined): Promise<Buffer> {
  const outputs: Buffer[] = []
  let ended = false
  stream.once('end', () => (ended = true))
  const reading = (async () => {
    for await (const chunk of stream as AsyncIterable<Buffer>) outputs.push(chunk)
  })()
  if (!stream.destroyed) {
    if (input === undefined) stream.end()
    else stream.end(input)
  }
  await reading
  if (!ended) throw Object.assign(new Error('the sandbox stream closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' })
  return outputs.length === 1 ? outputs[0]! : Buffer.concat(outputs)
}
