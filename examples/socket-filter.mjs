#!/usr/bin/env node
// A TCP server that pipes every connection through its own instance of a guest: what a client
// sends is the guest's input, what the guest emits is the reply, on the same connection. With
// the default guest, examples/numberer.wasm, each connection gets its own lines numbered from 1
// (the guest is stateful: one instance per connection, so no connection sees another's count).
//
//   node examples/socket-filter.mjs [module.wasm] [--port 7000] [--host 127.0.0.1]
//                                   [--backpressure block|drop|sample|adaptive] [--inline]
//                                   [--max-connections 200]
//   printf 'alpha\nbeta\n' | nc -N 127.0.0.1 7000      # 1<TAB>alpha, 2<TAB>beta
//
// Each guest runs in its own worker thread (unless --inline) with the default limits; a client
// that disconnects, or a guest that fails, ends that connection's guest and nothing else.
// SIGINT or SIGTERM stops accepting and lets open connections finish; the process then exits by
// itself. A second signal closes the open connections at once. See "Sockets" in the README.
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { createSandbox, loadGuest } from 'wasm-sandbox'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: 'string', default: '7000' },
    host: { type: 'string', default: '127.0.0.1' },
    backpressure: { type: 'string', default: 'block' },
    inline: { type: 'boolean', default: false },
    'max-connections': { type: 'string', default: '200' },
  },
})
const modulePath = positionals[0] ?? new URL('./numberer.wasm', import.meta.url)

// Read and check the guest once, before listening: a bad module fails here, not per connection.
// Each connection's stream gets these bytes (compiled once, cached by hash), never the file again.
const bytes = await readFile(modulePath)
await loadGuest(bytes)

const lossy = values.backpressure !== 'block'
const maxConnections = Number(values['max-connections'])
const sandbox = createSandbox({
  // A connection keeps its guest's worker until it closes: one worker per connection accepted,
  // or a connection past the sandbox's bound (4 per core by default) would wait, unanswered,
  // for another to close.
  maxWorkers: maxConnections,
  delimiter: '\n', // whole lines: a reply never stops in the middle of one
  isolation: values.inline ? 'inline' : 'worker',
  backpressure: /** @type {import('wasm-sandbox').BackpressureStrategy} */ (values.backpressure),
  // For a lossy strategy: shed whole lines once 1 MiB waits for the guest, until 256 KiB does.
  ...(lossy ? { flowControl: { highWaterMark: 1 << 20, lowWaterMark: 256 << 10 } } : {}),
})
const processor = sandbox.createStreamProcessor(bytes)

const connections = new Set()
let nextId = 1

// allowHalfOpen: a client that sends its input and then ends its side (shutdown(SHUT_WR), nc -N)
// still gets the whole reply. With net's default (false) the server's side is ended the moment
// the client's end arrives, and any reply not yet written is lost.
const server = net.createServer({ allowHalfOpen: true }, async (socket) => {
  const id = nextId++
  const peer = `${socket.remoteAddress}:${socket.remotePort}`
  const guest = processor.stream() // a fresh instance of the guest for this connection only
  connections.add(socket)
  console.error(`#${id} open ${peer} (${connections.size} open)`)
  if (lossy) guest.on('drop', ({ length }) => console.error(`#${id} dropped ${length} bytes`))
  let outcome = 'done'
  try {
    // The first error (the client resetting, the guest failing) destroys all three: the socket
    // is closed and the guest's worker ended. Its flow is the socket's: backpressure pauses it.
    await pipeline(socket, guest, socket)
  } catch (err) {
    outcome = err.code ?? err.message
    socket.destroy()
  } finally {
    connections.delete(socket)
    const m = guest.metrics()
    console.error(`#${id} closed ${outcome}: ${m.bytesIn} bytes in, ${m.bytesOut} out, ${m.bytesDropped} dropped (${connections.size} open)`)
  }
})

// Each open connection holds a guest (in a worker: a thread and a few MiB), so bound them: a
// connection past the limit is closed at once.
server.maxConnections = maxConnections
server.on('drop', (info) => console.error(`refused ${info.remoteAddress}:${info.remotePort}: ${server.maxConnections} connections open`))
server.on('error', (err) => {
  console.error(`server: ${err.message}`)
  process.exitCode = 1
})
server.listen(Number(values.port), values.host, () => {
  const { address, port } = server.address()
  console.log(`listening on ${address}:${port}`)
})

let stopping = false
function stop(signal) {
  if (!stopping) {
    stopping = true
    // Closed before it says so: a client that reads the line and connects must be refused.
    server.close(() => {
      sandbox.close() // the idle warm workers end now rather than after their 2 s
      console.error('server closed')
    })
    console.error(`${signal}: no new connections; waiting for ${connections.size} open (again to close them)`)
  } else {
    console.error(`${signal}: closing ${connections.size} open connections`)
    for (const socket of connections) socket.destroy()
  }
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
