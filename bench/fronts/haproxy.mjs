// bench front: HAProxy, one process with one thread (as nginx's one worker process and forkgate's
// master), forwarding each request to N plain backend processes on unix sockets with leastconn: to the
// backend with the fewest requests in progress. Keep-alive on both sides; an idle backend connection
// serves any client's next request (http-reuse always), as nginx's upstream keepalive pool does.
//
//   node bench/fronts/haproxy.mjs PORT SOCKET...
//
// This process writes HAProxy's configuration into a directory of its own in the working directory (the
// bench's temporary one), prints "bench: ready" (the bench then waits until a request goes through) and
// becomes HAProxy, in the foreground (-db): the process the bench started, measured and stops is HAProxy.
import { chmodSync, existsSync, mkdtempSync, writeFileSync, writeSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';

const [port, ...sockets] = process.argv.slice(2);
if (!/^\d+$/.test(port ?? '') || sockets.length === 0) {
  console.error('usage: node bench/fronts/haproxy.mjs PORT SOCKET...');
  process.exit(2);
}

const asRoot = process.getuid?.() === 0;
const directory = mkdtempSync(join(process.cwd(), 'haproxy-'));
// Run as root, HAProxy drops to its own user, as Debian's configuration has it: it passes through the
// bench's directory (mkdtemp makes it 0700) to the backends' sockets, which they make writable for all.
if (asRoot) chmodSync(process.cwd(), 0o711);
writeFileSync(
  `${directory}/haproxy.cfg`,
  `
global
  nbthread 1
  ${asRoot ? 'user haproxy\n  group haproxy' : ''}

defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s

frontend bench
  bind 127.0.0.1:${port}
  default_backend backends

backend backends
  balance leastconn
  http-reuse always
  ${sockets.map((socket, index) => `server backend${index} ${resolve(socket)}`).join('\n  ')}
`,
);

// execve takes a path, not a name to look up in PATH
const haproxy = (process.env.PATH ?? '').split(delimiter).map((entry) => join(entry, 'haproxy')).find(existsSync);
if (!haproxy) {
  console.error('haproxy not found in PATH');
  process.exit(1);
}
writeSync(1, 'bench: ready\n'); // synchronously: console.log to a pipe could still be buffered when execve replaces the process
process.execve(haproxy, ['haproxy', '-db', '-f', `${directory}/haproxy.cfg`]);
