// nginx-examples/ as users run them: each file rendered into a temp prefix and served by a real nginx
// in front of a real forkgate, over TCP and over a unix socket. nginx runs as Debian runs it: the
// master as root, the workers as www-data (as the invoking user when the tests do not run as root).
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FIXTURES, request, ROOT, start, type Forkgate } from './helpers/forkgate.ts';
import { install, type Installation } from './helpers/install.ts';
import { freePort } from './helpers/free-port.ts';

const missing = (command: string, args: string[]) => spawnSync(command, args).error !== undefined;
const noNginx = missing('nginx', ['-v']) && 'nginx not installed (apt-get install nginx)';
const noOpenssl = missing('openssl', ['version']) && 'openssl not installed: no certificate for the TLS example';
const asRoot = process.getuid?.() === 0;
const noWorkerUser =
  asRoot && spawnSync('id', ['www-data']).status !== 0 && "no user www-data for nginx's workers (Debian's nginx package makes it)";

type Upstream = 'tcp' | 'unix';

interface Seen {
  headers: http.IncomingHttpHeaders;
  /** Which upstream connection (per worker) carried the request, and that worker's pid. */
  connection: number;
  pid: number;
}

class Nginx {
  readonly process: ChildProcess;
  output = '';
  private readonly exited: Promise<void>;

  constructor(prefix: string) {
    // daemon off: a child of the test, stopped by it. Errors and notices on stderr, where readiness shows.
    const globals = `daemon off; pid ${prefix}/nginx.pid; error_log stderr notice;`;
    this.process = spawn('nginx', ['-p', prefix, '-c', `${prefix}/nginx.conf`, '-e', 'stderr', '-g', globals], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.process.stdout!.on('data', (chunk: Buffer) => (this.output += chunk));
    this.process.stderr!.on('data', (chunk: Buffer) => (this.output += chunk));
    this.exited = new Promise((resolve) => this.process.once('exit', () => resolve()));
  }

  /** nginx logs "start worker process" once it has bound its ports. */
  ready(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nginx not ready in 10 s:\n${this.output}`)), 10_000);
      const check = () => {
        if (!/start worker process/.test(this.output)) return;
        clearTimeout(timer);
        resolve();
      };
      this.process.stderr!.on('data', check);
      void this.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`nginx exited:\n${this.output}`));
      });
      check();
    });
  }

  async stop(): Promise<void> {
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

describe('nginx-examples', { skip: noNginx || noWorkerUser }, () => {
  /** What nginx's workers use (its temp paths, forkgate's sockets), where they may enter wherever the checkout is. */
  let dir: string;
  let forkgate: Forkgate;
  const upstreams = {} as Record<Upstream, string>;

  before(async () => {
    dir = enterable(mkdtempSync(join(tmpdir(), 'forkgate-nginx-')));
    forkgate = await start(['-w', '2', '-b', `unix:${dir}/forkgate.sock`, '-b', '127.0.0.1:0', `${FIXTURES}websocket.cjs`]);
    upstreams.unix = `unix:${dir}/forkgate.sock`;
    upstreams.tcp = (await forkgate.waitFor(/Listening at: http:\/\/(127\.0\.0\.1:\d+)/))[1]!;
  });
  after(async () => {
    await forkgate?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Renders an example into its own nginx prefix (every path nginx writes to inside it) and starts nginx. */
  async function serve(example: string, values: Record<string, string>): Promise<Nginx> {
    const prefix = enterable(mkdtempSync(join(dir, `${example}-`)));
    let site = readFileSync(`${ROOT}nginx-examples/${example}`, 'utf8');
    for (const [name, value] of Object.entries({ SERVER_NAME: 'localhost', ...values })) site = site.replaceAll(`{{${name}}}`, value);
    assert.doesNotMatch(site, /\{\{\w+\}\}/, `${example}: a placeholder the test did not fill`);
    writeFileSync(`${prefix}/site.conf`, site);
    const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((name) => `${name}_temp_path ${prefix}/${name};`);
    writeFileSync(
      `${prefix}/nginx.conf`,
      [
        asRoot ? 'user www-data;' : '',
        'worker_processes 1;',
        'events { worker_connections 64; }',
        `http { access_log ${prefix}/access.log; ${temp.join(' ')} include ${prefix}/site.conf; }`,
      ].join('\n'),
    );
    const nginx = new Nginx(prefix);
    await nginx.ready();
    return nginx;
  }

  async function seen(url: string, headers: http.OutgoingHttpHeaders = {}): Promise<Seen> {
    const reply = await request(url, { headers });
    assert.equal(reply.status, 200, reply.body);
    return JSON.parse(reply.body) as Seen;
  }

  /** Two requests on two client connections travel over one pooled upstream connection. */
  async function assertPooled(base: string): Promise<void> {
    const first = await seen(`${base}/request`);
    const second = await seen(`${base}/request`);
    assert.equal(first.headers.connection, undefined, 'no "Connection: close" upstream');
    assert.deepEqual([second.pid, second.connection], [first.pid, first.connection], 'the upstream connection was reused');
  }

  for (const upstream of ['tcp', 'unix'] as const) {
    test(`proxy.conf over ${upstream}: the app, forwarded headers, the keepalive pool, the health check`, async () => {
      const port = await freePort();
      const nginx = await serve('proxy.conf', { FORKGATE_ADDRESS: upstreams[upstream], LISTEN: `127.0.0.1:${port}` });
      try {
        const base = `http://127.0.0.1:${port}`;
        assert.equal((await request(`${base}/`)).body, 'hello from websocket app');
        assert.equal((await request(`${base}/healthz`)).body, 'ok');
        const { headers } = await seen(`${base}/request`, { host: 'app.example', 'x-forwarded-for': '198.51.100.7' });
        assert.equal(headers.host, 'app.example');
        assert.equal(headers['x-real-ip'], '127.0.0.1');
        assert.equal(headers['x-forwarded-for'], '198.51.100.7, 127.0.0.1');
        assert.equal(headers['x-forwarded-proto'], 'http');
        await assertPooled(base);
      } finally {
        await nginx.stop();
      }
    });

    test(`websocket.conf over ${upstream}: a WebSocket echoes through nginx; plain requests still pool`, async () => {
      const port = await freePort();
      const nginx = await serve('websocket.conf', { FORKGATE_ADDRESS: upstreams[upstream], LISTEN: `127.0.0.1:${port}` });
      try {
        const socket = new WebSocket(`ws://127.0.0.1:${port}/chat`);
        const echoed = await new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no WebSocket echo within 10 s')), 10_000);
          socket.addEventListener('open', () => socket.send('hello'));
          socket.addEventListener('message', (event) => {
            clearTimeout(timer);
            resolve(String(event.data));
          });
          socket.addEventListener('error', () => reject(new Error(`WebSocket failed; nginx said:\n${nginx.output}`)));
        });
        socket.close();
        assert.equal(echoed, 'echo: hello');
        await assertPooled(`http://127.0.0.1:${port}`);
      } finally {
        await nginx.stop();
      }
    });
  }

  /** forkgate where workers under --user nobody can read it, installed once. */
  let installed: Installation | undefined;
  after(() => installed?.remove());
  for (const [label, socketArgs, groupOfUser] of [
    ["as forkgate makes it (0666, the workers' user and group)", [], 'nobody'],
    ['0660 for group www-data (--socket-mode, --socket-group)', ['--socket-mode', '0660', '--socket-group', 'www-data'], 'www-data'],
  ] as const) {
    const name = `proxy.conf to forkgate under --user nobody, its unix socket ${label}: nginx's workers connect`;
    test(name, { skip: !asRoot && '--user needs root' }, async () => {
      installed ??= install(['ops.cjs']);
      const socket = join(dir, `nobody-${socketArgs.length}.sock`);
      const args = ['-w', '1', '--user', 'nobody', ...socketArgs, '-b', `unix:${socket}`, installed.app('ops.cjs')];
      const nobody = await start(args, { command: installed.command });
      let nginx: Nginx | undefined;
      try {
        const port = await freePort();
        nginx = await serve('proxy.conf', { FORKGATE_ADDRESS: `unix:${socket}`, LISTEN: `127.0.0.1:${port}` });
        const reply = await request(`http://127.0.0.1:${port}/pid`);
        assert.equal(reply.status, 200, nginx.output);
        assert.deepEqual(nobody.workerPids(), [Number(reply.body)], 'a worker of forkgate under --user answered');
        const { uid, gid, mode } = statSync(socket);
        const expected = { uid: idsOf('nobody').uid, gid: idsOf(groupOfUser).gid, mode: socketArgs.length ? 0o660 : 0o666 };
        assert.deepEqual({ uid, gid, mode: mode & 0o777 }, expected, "the socket's owner and mode");
      } finally {
        await nginx?.stop();
        await nobody.stop();
      }
    });
  }

  test('streaming.conf: /upload reaches the app while the client still sends; /events streams; / is served', async () => {
    const port = await freePort();
    const nginx = await serve('streaming.conf', { FORKGATE_ADDRESS: upstreams.tcp, LISTEN: `127.0.0.1:${port}` });
    try {
      assert.equal((await request(`http://127.0.0.1:${port}/`)).body, 'hello from websocket app');
      // The app answers each piece of the body as it comes: the first answer arrives while the request
      // is unfinished, which nginx's request buffering (the default) would not allow.
      const upload = http.request(`http://127.0.0.1:${port}/upload`, {
        method: 'POST',
        agent: false,
        headers: { 'transfer-encoding': 'chunked' },
      });
      upload.setTimeout(8000, () => upload.destroy(new Error('no answer to the first piece within 8 s: request buffered?')));
      upload.write('part one');
      const response = await new Promise<http.IncomingMessage>((resolve, reject) => upload.on('response', resolve).on('error', reject));
      assert.equal(await firstChunk(response), 'received part one\n');
      upload.end('part two');
      let rest = '';
      for await (const chunk of response) rest += chunk;
      assert.equal(rest, 'received part two\nend\n');

      // The app sends one chunk and ends only when the client leaves (or after 10 s).
      const events = http.get(`http://127.0.0.1:${port}/events`, { agent: false });
      events.setTimeout(8000, () => events.destroy(new Error('no event within 8 s')));
      const stream = await new Promise<http.IncomingMessage>((resolve, reject) => events.on('response', resolve).on('error', reject));
      assert.equal(await firstChunk(stream), 'first chunk\n');
      assert.equal(stream.complete, false, 'the stream is still open');
      events.destroy();
    } finally {
      await nginx.stop();
    }
  });

  test('proxy-protocol.conf: the client named by a PROXY v2 header reaches the app; health checks and bare HTTP', async () => {
    const port = await freePort();
    const nginx = await serve('proxy-protocol.conf', {
      FORKGATE_ADDRESS: upstreams.tcp,
      LISTEN: `127.0.0.1:${port}`,
      LOAD_BALANCER_CIDR: '127.0.0.1/32',
    });
    try {
      const get = (path: string) =>
        `GET ${path} HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.66\r\nConnection: close\r\n\r\n`;
      const proxied = await exchange(
        port,
        Buffer.concat([proxyV2Header('192.0.2.10', 40000, '127.0.0.1', port), Buffer.from(get('/request'))]),
      );
      assert.match(proxied, /^HTTP\/1\.1 200 /);
      const { headers } = JSON.parse(proxied.slice(proxied.indexOf('\r\n\r\n') + 4)) as Seen;
      assert.equal(headers['x-real-ip'], '192.0.2.10');
      assert.equal(headers['x-forwarded-for'], '192.0.2.10', 'what the client sent is replaced');
      // An NLB health check carries a LOCAL header (no client): nginx serves it from the connection's own address.
      assert.match(await exchange(port, Buffer.concat([proxyV2Header(), Buffer.from(get('/healthz'))])), /^HTTP\/1\.1 200 /);
      // A connection without the header (not through the balancer) gets no answer from the app.
      assert.doesNotMatch(await exchange(port, Buffer.from(get('/request'))), /^HTTP\/1\.1 200 /);
    } finally {
      await nginx.stop();
    }
  });

  test('tls.conf: HTTPS at nginx, plain HTTP to forkgate; port 80 redirects', { skip: noOpenssl }, async () => {
    const certificate = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    const openssl = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        key,
        '-out',
        certificate,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(openssl.status, 0, openssl.stderr);
    const [httpPort, httpsPort] = [await freePort(), await freePort()];
    const nginx = await serve('tls.conf', {
      FORKGATE_ADDRESS: upstreams.unix,
      HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
      TLS_CERTIFICATE: certificate,
      TLS_CERTIFICATE_KEY: key,
    });
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const req = https.get(`https://127.0.0.1:${httpsPort}/request`, { ca: readFileSync(certificate), agent: false }, (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk));
          res.on('end', () => resolve(text));
        });
        req.on('error', reject);
        req.setTimeout(10_000, () => req.destroy(new Error('HTTPS request timed out')));
      });
      assert.equal((JSON.parse(body) as Seen).headers['x-forwarded-proto'], 'https');
      const redirect = await request(`http://127.0.0.1:${httpPort}/path?q=1`, { headers: { host: 'app.example' } });
      assert.equal(redirect.status, 301);
      assert.equal(redirect.headers.location, 'https://app.example/path?q=1');
    } finally {
      await nginx.stop();
    }
  });
});

/** nginx's workers pass through it, wherever it is: mkdtemp makes a directory 0700. */
function enterable(path: string): string {
  chmodSync(path, 0o755);
  return path;
}

/** A user's uid and primary gid, as id(1) tells them. */
function idsOf(user: string): { uid: number; gid: number } {
  const id = (flag: string) => Number(spawnSync('id', [flag, user], { encoding: 'utf8' }).stdout);
  return { uid: id('-u'), gid: id('-g') };
}

function firstChunk(response: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    response.once('data', (chunk: Buffer) => resolve(chunk.toString()));
    response.once('error', reject);
  });
}

/**
 * A PROXY protocol v2 header: PROXY over TCP/IPv4 from source to destination, as an AWS NLB sends it, or
 * without addresses a LOCAL one, as on its health checks.
 */
function proxyV2Header(source?: string, sourcePort = 0, destination = '', destinationPort = 0): Buffer {
  const signature = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
  if (source === undefined) return Buffer.concat([signature, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  const addresses = Buffer.alloc(12);
  Buffer.from(source.split('.').map(Number)).copy(addresses, 0);
  Buffer.from(destination.split('.').map(Number)).copy(addresses, 4);
  addresses.writeUInt16BE(sourcePort, 8);
  addresses.writeUInt16BE(destinationPort, 10);
  return Buffer.concat([signature, Buffer.from([0x21, 0x11, 0x00, 12]), addresses]);
}

/** Sends raw bytes on a fresh connection and returns everything received until the peer closes. */
function exchange(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(bytes));
    let received = '';
    socket.on('data', (chunk) => (received += chunk));
    socket.on('close', () => resolve(received));
    socket.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? resolve(received) : reject(error)));
    socket.setTimeout(10_000, () => socket.destroy(new Error('no close within 10 s')));
  });
}
