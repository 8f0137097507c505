/**
 * Run as a child process by gulp.test.ts: stops a gulp plugin while its guest is running (a guest
 * that loops forever, with a time limit far longer than the test waits), then does nothing else.
 * The test passes only if this process exits by itself, i.e. the guest's worker is gone.
 *   buffer: destroys the plugin stream while it processes a buffer file;
 *   stream: destroys a streaming file's new contents once the guest is running.
 */
import { PassThrough } from 'node:stream'
import Vinyl from 'vinyl'
import wasmGulp from '../../lib/adapters/gulp.js'
import { fixture } from '../helpers/reference.js'

const mode = process.argv[2] ?? 'buffer'
const plugin = wasmGulp(fixture('loop-process.wasm'), { limits: { timeout: 600_000 }, concurrency: 2 })
const report = (what: Record<string, unknown>): void => void process.stdout.write(JSON.stringify(what) + '\n')
plugin.on('error', (err) => report({ pluginError: err.message }))

if (mode === 'buffer') {
  // Two files run at once; the third waits for room (its transform callback is held).
  for (const name of ['a', 'b', 'c']) {
    plugin.write(new Vinyl({ cwd: '/', base: '/src', path: `/src/${name}.txt`, contents: Buffer.from('input') }))
  }
  plugin.on('close', () => report({ closed: true }))
  // The files are in the guests' hands (buffer mode shows no output until a file is done).
  setTimeout(() => {
    plugin.destroy()
    report({ destroyed: true })
  }, 300)
} else {
  const source = new PassThrough()
  plugin.on('data', (file: Vinyl) => {
    const contents = file.contents as NodeJS.ReadableStream & { destroy(): void }
    contents.once('data', (chunk: Buffer) => {
      // The guest emitted its handshake from inside process_chunk: it is running now.
      contents.destroy()
      report({ first: chunk.toString(), destroyed: true, sourceDestroyed: source.destroyed })
      setImmediate(() => report({ sourceDestroyed: source.destroyed }))
    })
  })
  plugin.write(new Vinyl({ cwd: '/', base: '/src', path: '/src/a.txt', contents: source }))
  source.write('input')
}
