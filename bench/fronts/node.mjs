// bench front: one Node process that forwards each request to N plain backend processes, round-robin,
// over one keep-alive http.Agent; the engine that forwards is the only thing that differs:
//
//   node bench/fronts/node.mjs http-proxy|http-proxy-3|pipe|floor|l4 PORT SOCKET...
//
//   http-proxy     http-proxy 1.18, the naive proxy most Node projects reach for (unmaintained)
//   http-proxy-3   its maintained, API-compatible rewrite
//   pipe           node:http itself: http.request to the backend, bodies piped both ways
//   floor          the least an HTTP front on node:http's server can do: no edge, no dispatch, a
//                  head written as one string, a response with a length relayed as it came (bench
//                  apps only); what any front built on node:http's server costs at the least
//   l4             no HTTP at all: each client connection piped to one backend; what Node's sockets
//                  cost at the least
//
// The backends listen on unix sockets, as forkgate's --balance proxy reaches its units. Prints
// "bench: ready" once it listens; the bench then checks that a request goes through.
import * as http from 'node:http';
import * as net from 'node:net';

const [engine, port, ...sockets] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true });

let next = 0;
const nextBackend = () => sockets[next++ % sockets.length];

const badGateway = (res) => {
  if (!res.headersSent) res.writeHead(502);
  res.end();
};

/** Hop-by-hop headers a proxy must not pass on: each side's connection is its own. */
function endToEnd(headers) {
  const { connection: _connection, 'keep-alive': _keepAlive, ...rest } = headers;
  return rest;
}

function pipe(req, res) {
  const upstream = http.request(
    { socketPath: nextBackend(), method: req.method, path: req.url, headers: endToEnd(req.headers), agent },
    (reply) => {
      res.writeHead(reply.statusCode, endToEnd(reply.headers));
      reply.pipe(res);
    },
  );
  upstream.on('error', () => badGateway(res));
  req.pipe(upstream);
}

/** http-proxy and http-proxy-3 share the API: createProxyServer({ agent }).web(req, res, { target }). */
function viaProxyLibrary(proxy) {
  return (req, res) => proxy.web(req, res, { target: { socketPath: nextBackend() } }, () => badGateway(res));
}

/** Idle keep-alive connections per backend, for `floor`. */
const idle = new Map(sockets.map((socket) => [socket, []]));

function floor(req, res) {
  const socket = nextBackend();
  let connection = idle.get(socket).pop();
  if (!connection) {
    connection = net.connect(socket);
    connection.on('error', () => {});
    connection.on('close', () => idle.set(socket, idle.get(socket).filter((other) => other !== connection)));
    connection.on('data', (chunk) => connection.onResponse(chunk));
  }
  let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
  for (let i = 0; i < req.rawHeaders.length; i += 2) head += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
  connection.write(`${head}\r\n`, 'latin1');
  let received = null;
  connection.onResponse = (chunk) => {
    received = received ? Buffer.concat([received, chunk]) : chunk;
    const end = received.indexOf('\r\n\r\n');
    if (end < 0) return;
    const text = received.toString('latin1', 0, end);
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text)?.[1] ?? 0);
    if (received.length < end + 4 + length) return;
    idle.get(socket).push(connection);
    let fields = '';
    for (const line of text.split('\r\n').slice(1)) if (!/^(connection|keep-alive):/i.test(line)) fields += `${line}\r\n`;
    const [, status, reason] = /^HTTP\/1\.1 (\d{3}) (.*)/.exec(text);
    res.writeHead(Number(status), reason, fields.split('\r\n').filter(Boolean).flatMap((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]));
    res.end(received.subarray(end + 4, end + 4 + length));
  };
}

function l4(client) {
  const backend = net.connect(nextBackend());
  client.on('error', () => backend.destroy());
  backend.on('error', () => client.destroy());
  client.pipe(backend).pipe(client);
}

// Only the engine in use is loaded, so the RSS column counts no other library.
const engines = {
  'http-proxy': async () => viaProxyLibrary((await import('http-proxy')).default.createProxyServer({ agent })),
  'http-proxy-3': async () => viaProxyLibrary((await import('http-proxy-3')).createProxyServer({ agent })),
  pipe: async () => pipe,
  floor: async () => floor,
};

if ((!engines[engine] && engine !== 'l4') || !/^\d+$/.test(port ?? '') || sockets.length === 0) {
  console.error('usage: node bench/fronts/node.mjs http-proxy|http-proxy-3|pipe|floor|l4 PORT SOCKET...');
  process.exit(2);
}
const server = engine === 'l4' ? net.createServer(l4) : http.createServer(await engines[engine]());
server.listen(Number(port), '127.0.0.1', () => console.log('bench: ready'));
