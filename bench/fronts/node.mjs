// bench front: one Node process that forwards each request to N plain backend processes, round-robin,
// over one keep-alive http.Agent; the engine that forwards is the only thing that differs:
//
//   node bench/fronts/node.mjs http-proxy|http-proxy-3|pipe PORT SOCKET...
//
//   http-proxy     http-proxy 1.18, the naive proxy most Node projects reach for (unmaintained)
//   http-proxy-3   its maintained, API-compatible rewrite
//   pipe           node:http itself: http.request to the backend, bodies piped both ways
//
// The backends listen on unix sockets, as forkgate's --balance proxy reaches its units. Prints
// "bench: ready" once it listens; the bench then checks that a request goes through.
import * as http from 'node:http';

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

// Only the engine in use is loaded, so the RSS column counts no other library.
const engines = {
  'http-proxy': async () => viaProxyLibrary((await import('http-proxy')).default.createProxyServer({ agent })),
  'http-proxy-3': async () => viaProxyLibrary((await import('http-proxy-3')).createProxyServer({ agent })),
  pipe: async () => pipe,
};

if (!engines[engine] || !/^\d+$/.test(port ?? '') || sockets.length === 0) {
  console.error('usage: node bench/fronts/node.mjs http-proxy|http-proxy-3|pipe PORT SOCKET...');
  process.exit(2);
}
http.createServer(await engines[engine]()).listen(Number(port), '127.0.0.1', () => console.log('bench: ready'));
