// bench front: one Node process that forwards each request to N plain backend processes, round-robin,
// over one keep-alive http.Agent; the engine that forwards is the only thing that differs:
//
//   node bench/fronts/node.mjs http-proxy|http-proxy-3|pipe|floor|llhttp|l4 PORT SOCKET...
//
//   http-proxy     http-proxy 1.18, the naive proxy most Node projects reach for (unmaintained)
//   http-proxy-3   its maintained, API-compatible rewrite
//   pipe           node:http itself: http.request to the backend, bodies piped both ways
//   floor          the least an HTTP front on node:http's server can do: no edge, no dispatch, a
//                  head written as one string, a response with a length relayed as it came (bench
//                  apps only); what any front built on node:http's server costs at the least
//   llhttp         the least an HTTP front on Node's own parser can do, without node:http's server:
//                  llhttp driven directly, reading natively into it as node:http does, a head written
//                  as one string, a response relayed as it came (bench apps only: no bodies, no limits)
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

/**
 * llhttp as node:http's server drives it (node:_http_common's HTTPParser; its callbacks by the slots
 * node:http fills), minus IncomingMessage, ServerResponse and the stream events: each socket's reads go
 * straight into its parser (consume), requests on a connection are answered in turn.
 */
function llhttpServer() {
  const { HTTPParser, methods } = _httpCommon;
  const { kOnHeaders, kOnHeadersComplete, kOnBody, kOnMessageComplete, kOnExecute } = HTTPParser;
  const idleRelays = new Map(sockets.map((socket) => [socket, []]));

  /** Reads `socket` into a new parser of `type`; a parse error or a failed socket closes it. */
  function parse(socket, type) {
    const parser = new HTTPParser();
    parser.initialize(type, {}, 0, HTTPParser.kLenientNone);
    parser[kOnHeaders] = () => {};
    parser[kOnBody] = () => {};
    parser[kOnExecute] = (result) => {
      if (result instanceof Error) socket.destroy();
    };
    socket.on('error', () => socket.destroy());
    parser.consume(socket._handle);
    return parser;
  }

  function relayTo(path) {
    const connection = net.connect(path);
    connection.on('connect', () => {
      const parser = parse(connection, HTTPParser.RESPONSE);
      let head = null;
      parser[kOnHeadersComplete] = (_major, _minor, headers, _method, _url, status, reason) => {
        head = `HTTP/1.1 ${status} ${reason}\r\n`;
        for (let i = 0; i < headers.length; i += 2) if (!/^(connection|keep-alive)$/i.test(headers[i])) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
        head += '\r\n';
      };
      // The head and a body in one write, as node:http's server does for a body given to end().
      parser[kOnBody] = (body) => {
        connection.client.write(head === null ? body : Buffer.concat([Buffer.from(head, 'latin1'), body]));
        head = null;
      };
      parser[kOnMessageComplete] = () => {
        if (head !== null) connection.client.write(head, 'latin1');
        head = null;
        const { client } = connection;
        connection.client = null;
        idleRelays.get(path).push(connection);
        client.answered();
      };
      connection.send();
    });
    connection.on('close', () => idleRelays.set(path, idleRelays.get(path).filter((other) => other !== connection)));
    return connection;
  }

  return net.createServer((client) => {
    client.setNoDelay(true);
    const parser = parse(client, HTTPParser.REQUEST);
    const waiting = [];
    let answering = false;
    const next = () => {
      answering = true;
      const path = nextBackend();
      const idleRelay = idleRelays.get(path).pop();
      const relay = idleRelay ?? relayTo(path);
      relay.client = client;
      relay.send = () => relay.write(waiting.shift(), 'latin1');
      if (idleRelay) relay.send();
    };
    client.answered = () => {
      answering = false;
      if (waiting.length > 0) next();
    };
    parser[kOnHeadersComplete] = (_major, _minor, headers, method, url) => {
      let head = `${methods[method]} ${url} HTTP/1.1\r\n`;
      for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
      waiting.push(`${head}\r\n`);
      if (!answering) next();
    };
    parser[kOnMessageComplete] = () => {};
  });
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

const servers = { l4: () => net.createServer(l4), llhttp: llhttpServer };
if ((!engines[engine] && !servers[engine]) || !/^\d+$/.test(port ?? '') || sockets.length === 0) {
  console.error('usage: node bench/fronts/node.mjs http-proxy|http-proxy-3|pipe|floor|llhttp|l4 PORT SOCKET...');
  process.exit(2);
}
// node:http's parser module, loaded only for the engine that drives it
const _httpCommon = engine === 'llhttp' ? await import('node:_http_common') : null;
const server = servers[engine]?.() ?? http.createServer(await engines[engine]());
server.listen(Number(port), '127.0.0.1', () => console.log('bench: ready'));
