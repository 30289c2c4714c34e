// bench front: nginx with one worker process (forkgate's front is one process too) forwarding each
// request, round-robin, to N plain backend processes on unix sockets, over upstream keep-alive
// connections: the usual reverse-proxy configuration (nginx-examples/proxy.conf), less its headers.
// With least_conn, each request goes to the backend with the fewest requests in progress instead.
//
//   node bench/fronts/nginx.mjs [least_conn] PORT SOCKET...
//
// This process writes nginx's configuration into a prefix of its own in the working directory (the bench's
// temporary one), prints "bench: ready" (the bench then waits until a request goes through) and becomes
// nginx, in the foreground: the process the bench started, measured and stops is nginx's master itself.
import { chmodSync, existsSync, mkdtempSync, writeFileSync, writeSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';

const leastConn = process.argv[2] === 'least_conn';
const [port, ...sockets] = process.argv.slice(leastConn ? 3 : 2);
if (!/^\d+$/.test(port ?? '') || sockets.length === 0) {
  console.error('usage: node bench/fronts/nginx.mjs [least_conn] PORT SOCKET...');
  process.exit(2);
}

const asRoot = process.getuid?.() === 0;
const prefix = mkdtempSync(join(process.cwd(), 'nginx-'));
// Run as root, nginx runs its worker as www-data, as Debian's does: it passes through the bench's
// directories (mkdtemp makes them 0700) to the backends' sockets, which they make writable for all.
if (asRoot) for (const directory of [process.cwd(), prefix]) chmodSync(directory, 0o711);
const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((name) => `${name}_temp_path ${prefix}/${name};`);
writeFileSync(
  `${prefix}/nginx.conf`,
  `
${asRoot ? 'user www-data;' : ''}
worker_processes 1;
events { worker_connections 1024; }
http {
  access_log off;
  ${temp.join('\n  ')}
  upstream backends {
    ${leastConn ? 'least_conn;' : ''}
    ${sockets.map((socket) => `server unix:${resolve(socket)};`).join('\n    ')}
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backends;
      # HTTP/1.1 and no "Connection: close": what lets the keepalive pool reuse connections
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`,
);

const globals = `daemon off; pid ${prefix}/nginx.pid; error_log stderr warn;`;
// execve takes a path, not a name to look up in PATH
const nginx = (process.env.PATH ?? '').split(delimiter).map((directory) => join(directory, 'nginx')).find(existsSync);
if (!nginx) {
  console.error('nginx not found in PATH');
  process.exit(1);
}
writeSync(1, 'bench: ready\n'); // synchronously: console.log to a pipe could still be buffered when execve replaces the process
process.execve(nginx, ['nginx', '-p', prefix, '-c', `${prefix}/nginx.conf`, '-e', 'stderr', '-g', globals]);
