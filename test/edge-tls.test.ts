// TLS termination in the workers (with --balance proxy, in the master): HTTPS in every balance mode,
// behind a PROXY header, and client certificates (mutual TLS). The certificates are made for each run with openssl.
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { after, describe, test } from 'node:test';
import { eventually, FIXTURES, Forkgate, request, silentConnection, start, within } from './helpers/forkgate.ts';
import { makeCertificates, type Echo } from './helpers/edge.ts';
import { install } from './helpers/install.ts';

const ECHO = `${FIXTURES}edge-echo.cjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-edge-tls-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const certificates = makeCertificates(scratch);
const skip = typeof certificates === 'string' ? certificates : false;
const certs = certificates as Exclude<typeof certificates, string>;

interface HttpsReply {
  status: number;
  echo: Echo;
}

/**
 * One HTTPS request on a fresh connection, trusting the test CA: raw HTTP/1.1 over tls.connect, so that
 * a PROXY header can go first on the same connection.
 */
function httpsGet(url: string, options: { cert?: Buffer; key?: Buffer; proxyHeader?: string } = {}): Promise<HttpsReply> {
  const { hostname: host, port } = new URL(url);
  return new Promise((resolve, reject) => {
    let socket: net.Socket | undefined;
    if (options.proxyHeader) {
      socket = net.connect(Number(port), host);
      socket.write(options.proxyHeader);
    }
    const client = tls.connect({ host, port: Number(port), socket, ca: certs.ca, cert: options.cert, key: options.key }, () =>
      client.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    );
    let received = '';
    client.setEncoding('utf8');
    client.on('data', (chunk: string) => (received += chunk));
    client.on('error', reject);
    client.on('close', () => {
      clearTimeout(timer);
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(received)?.[1];
      if (!status) return reject(new Error(`no HTTP response over TLS; got ${JSON.stringify(received)}`));
      resolve({ status: Number(status), echo: JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4)) as Echo });
    });
    const timer = setTimeout(() => client.destroy(new Error('the HTTPS request timed out')), 15_000);
  });
}

const tlsFlags = () => ['--certfile', certs.files.serverCert, '--keyfile', certs.files.serverKey];

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`--certfile/--keyfile: the workers serve HTTPS; plain HTTP gets no answer and harms no worker (${balance})`, { skip }, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', ...tlsFlags(), ECHO]);
    try {
      const [pid] = forkgate.workerPids();
      assert.match(forkgate.url, /^https:\/\//, 'the master logs the https:// URL');
      const reply = await httpsGet(forkgate.url);
      assert.equal(reply.status, 200);
      assert.equal(reply.echo.encrypted, true);
      assert.equal(reply.echo.remoteAddress, '127.0.0.1');
      await assert.rejects(request(forkgate.url.replace(/^https:/, 'http:'))); // plaintext is refused
      assert.equal((await httpsGet(forkgate.url)).status, 200);
      assert.deepEqual(forkgate.workerPids(), [pid]);
    } finally {
      await forkgate.stop();
    }
  });
}

test('TLS behind a PROXY header: the app sees the client the header names', { skip }, async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--proxy-protocol', 'v1', ...tlsFlags(), ECHO]);
  try {
    const reply = await httpsGet(forkgate.url, { proxyHeader: 'PROXY TCP4 203.0.113.5 127.0.0.1 4242 443\r\n' });
    assert.deepEqual([reply.echo.remoteAddress, reply.echo.remotePort, reply.echo.encrypted], ['203.0.113.5', 4242, true]);
    assert.equal(reply.echo.headers['x-forwarded-for'], '203.0.113.5');
  } finally {
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'proxy']) {
  test(`--cert-reqs required: a client without a certificate is refused, one the CA signed is served, and the app reads its certificate (${balance})`, {
    skip,
  }, async () => {
    const forkgate = await start([
      '-w',
      '1',
      '--balance',
      balance,
      '-b',
      '127.0.0.1:0',
      ...tlsFlags(),
      '--ca-certs',
      certs.files.ca,
      '--cert-reqs',
      'required',
      ECHO,
    ]);
    try {
      await assert.rejects(httpsGet(forkgate.url), /certificate required/);
      const reply = await httpsGet(forkgate.url, { cert: certs.clientCert, key: certs.clientKey });
      assert.equal(reply.status, 200);
      assert.equal(reply.echo.authorized, true);
      assert.equal(reply.echo.peerCN, 'client');
      assert.equal(reply.echo.peerFingerprint, new X509Certificate(certs.clientCert).fingerprint256);
    } finally {
      await forkgate.stop();
    }
  });

  test(`--cert-reqs optional: a client without a certificate is served, and the app can tell (${balance})`, { skip }, async () => {
    const forkgate = await start([
      '-w',
      '1',
      '--balance',
      balance,
      '-b',
      '127.0.0.1:0',
      ...tlsFlags(),
      '--ca-certs',
      certs.files.ca,
      '--cert-reqs',
      'optional',
      ECHO,
    ]);
    try {
      const anonymous = (await httpsGet(forkgate.url)).echo;
      assert.deepEqual([anonymous.authorized, anonymous.peerCN, anonymous.peerFingerprint], [false, null, null]);
      const known = (await httpsGet(forkgate.url, { cert: certs.clientCert, key: certs.clientKey })).echo;
      assert.deepEqual(
        [known.authorized, known.peerCN, known.peerFingerprint],
        [true, 'client', new X509Certificate(certs.clientCert).fingerprint256],
      );
    } finally {
      await forkgate.stop();
    }
  });
}

describe('a certificate file that cannot serve: one line naming the setting and the file, exit 2, before anything listens', {
  skip,
}, () => {
  const garbage = join(scratch, 'garbage.pem');
  writeFileSync(garbage, 'not a certificate\n');
  const cases = [
    {
      problem: 'a missing --certfile',
      flags: () => ['--certfile', join(scratch, 'missing.pem')],
      expect: /--certfile \S+missing\.pem: cannot read it: no such file or directory \(ENOENT\)/,
    },
    {
      problem: 'a --certfile without a certificate',
      flags: () => ['--certfile', garbage],
      expect: /--certfile \S+garbage\.pem: no PEM certificate in it \(.*no start line\)/,
    },
    {
      problem: 'a --certfile without a key, and no --keyfile',
      flags: () => ['--certfile', certs.files.serverCert],
      expect: /--certfile \S+: no unencrypted PEM private key in it, and no --keyfile given/,
    },
    {
      problem: 'a --keyfile without a key',
      flags: () => ['--certfile', certs.files.serverCert, '--keyfile', garbage],
      expect: /--keyfile \S+garbage\.pem: no unencrypted PEM private key in it/,
    },
    {
      problem: "a --keyfile that is another certificate's key",
      flags: () => ['--certfile', certs.files.serverCert, '--keyfile', certs.files.clientKey],
      expect: /--keyfile \S+client\.key: not the private key of the certificate in --certfile \S+/,
    },
    {
      problem: 'a --ca-certs without a certificate',
      flags: () => [...tlsFlags(), '--ca-certs', garbage, '--cert-reqs', 'required'],
      expect: /--ca-certs \S+garbage\.pem: no PEM certificate in it/,
    },
  ];
  for (const balance of ['round-robin', 'proxy']) {
    test(`each of: ${cases.map(({ problem }) => problem).join('; ')} (${balance})`, async () => {
      for (const { problem, flags, expect } of cases) {
        const forkgate = new Forkgate(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', ...flags(), ECHO]);
        const { code } = await forkgate.exited;
        assert.equal(code, 2, `${problem}:\n${forkgate.output}`);
        assert.match(forkgate.output, /^forkgate: error: /, problem);
        assert.match(forkgate.output, expect, problem);
        assert.equal(forkgate.output.trimEnd().split('\n').length, 1, `${problem}: expected one line, got:\n${forkgate.output}`);
      }
    });
  }
});

/** The fingerprint of the certificate a fresh TLS connection is shown (not verified: it may be either run's). */
function servedFingerprint(url: string): Promise<string> {
  const { hostname: host, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const client = tls.connect({ host, port: Number(port), rejectUnauthorized: false }, () => {
      resolve(client.getPeerCertificate().fingerprint256);
      client.destroy();
    });
    client.on('error', reject);
  });
}

for (const balance of ['round-robin', 'proxy']) {
  test(`HUP serves a renewed certificate without a restart (${balance})`, { skip }, async () => {
    const live = mkdtempSync(join(scratch, 'live-'));
    const renewed = makeCertificates(mkdtempSync(join(scratch, 'renewed-'))) as typeof certs;
    const [cert, key] = [join(live, 'cert.pem'), join(live, 'key.pem')];
    copyFileSync(certs.files.serverCert, cert);
    copyFileSync(certs.files.serverKey, key);
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, ECHO]);
    try {
      const before = await servedFingerprint(forkgate.url);
      copyFileSync(renewed.files.serverCert, cert);
      copyFileSync(renewed.files.serverKey, key);
      forkgate.signal('SIGHUP');
      const after = new X509Certificate(readFileSync(renewed.files.serverCert)).fingerprint256;
      assert.notEqual(before, after);
      await eventually(async () => (await servedFingerprint(forkgate.url)) === after, 'the renewed certificate to be served');
      // Clients that left right after their handshake hold no stop: their connections closed with them.
      assert.equal((await forkgate.stop()).code, 0);
    } finally {
      await forkgate.stop();
    }
  });
}

for (const balance of ['round-robin', 'proxy']) {
  test(`HUP with a certificate that cannot serve keeps the old one and says why (${balance})`, { skip }, async () => {
    const live = mkdtempSync(join(scratch, 'live-'));
    const [cert, key] = [join(live, 'cert.pem'), join(live, 'key.pem')];
    copyFileSync(certs.files.serverCert, cert);
    copyFileSync(certs.files.serverKey, key);
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, ECHO]);
    try {
      const served = await servedFingerprint(forkgate.url);
      const workers = forkgate.workerPids();
      writeFileSync(cert, 'truncated by a renewal gone wrong\n');
      forkgate.signal('SIGHUP');
      await forkgate.waitFor(/Reload aborted, settings unchanged: --certfile \S+cert\.pem: no PEM certificate in it/);
      assert.equal(await servedFingerprint(forkgate.url), served);
      assert.equal((await httpsGet(forkgate.url)).status, 200);
      assert.deepEqual(forkgate.workerPids(), workers, 'no new generation was started');
      assert.doesNotMatch(forkgate.output, /Worker failed to boot/);
    } finally {
      await forkgate.stop();
    }
  });
}

for (const mode of [
  ['--balance', 'round-robin'],
  ['--balance', 'reuseport'],
  ['--threads', '2'],
]) {
  test(`a replaced worker serves the certificate the master read, whatever is on disk now (${mode.join(' ')})`, { skip }, async () => {
    const live = mkdtempSync(join(scratch, 'live-'));
    const [cert, key] = [join(live, 'cert.pem'), join(live, 'key.pem')];
    copyFileSync(certs.files.serverCert, cert);
    copyFileSync(certs.files.serverKey, key);
    const forkgate = await start([
      '-w',
      '1',
      ...mode,
      '--log-level',
      'debug',
      '-b',
      '127.0.0.1:0',
      '--certfile',
      cert,
      '--keyfile',
      key,
      ECHO,
    ]);
    try {
      const served = await servedFingerprint(forkgate.url);
      assert.equal(served, new X509Certificate(readFileSync(certs.files.serverCert)).fingerprint256);
      writeFileSync(cert, 'truncated by a renewal gone wrong\n');
      rmSync(key);
      const [doomed] = forkgate.workerPids();
      process.kill(doomed!, 'SIGKILL');
      await eventually(
        () => forkgate.count(/Worker \(pid:\d+\) ready/) === 2 || forkgate.count(/Worker failed to boot/) > 0,
        'the replacement to boot',
        20_000,
      );
      assert.doesNotMatch(forkgate.output, /Worker failed to boot/);
      assert.equal(await servedFingerprint(forkgate.url), served);
      assert.equal((await httpsGet(forkgate.url)).status, 200);
    } finally {
      await forkgate.stop();
    }
  });
}

test('--user: a key file only root may read serves, as the master reads it', {
  skip: skip || (process.getuid?.() !== 0 && 'needs root'),
}, async () => {
  const installed = install(['edge-echo.cjs']);
  const key = join(scratch, 'root-only.key');
  copyFileSync(certs.files.serverKey, key);
  chmodSync(key, 0o600);
  const forkgate = await start(
    [
      '-w',
      '1',
      '--user',
      'nobody',
      '-b',
      '127.0.0.1:0',
      '--certfile',
      certs.files.serverCert,
      '--keyfile',
      key,
      installed.app('edge-echo.cjs'),
    ],
    { command: installed.command, cwd: installed.dir },
  );
  try {
    const [worker] = forkgate.workerPids();
    assert.match(readFileSync(`/proc/${worker}/status`, 'utf8'), /^Uid:\t65534\t/m, 'the worker runs as nobody');
    assert.equal((await httpsGet(forkgate.url)).status, 200);
  } finally {
    await forkgate.stop();
    installed.remove();
  }
});

test('HUP with --balance proxy that turns TLS on: named in the log as taking a restart; plain HTTP serves on', { skip }, async () => {
  const config = join(scratch, 'tls-toggle.json');
  writeFileSync(config, JSON.stringify({ workers: 1 }));
  const forkgate = await start(['-c', config, '--balance', 'proxy', '-b', '127.0.0.1:0', ECHO]);
  try {
    writeFileSync(config, JSON.stringify({ workers: 1, certfile: certs.files.serverCert, keyfile: certs.files.serverKey }));
    forkgate.signal('SIGHUP');
    await forkgate.waitFor(/--certfile: with --balance proxy, turning TLS on takes effect on restart, not on reload/);
    assert.equal((await request(`${forkgate.url}/`)).status, 200);
  } finally {
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'proxy']) {
  test(`a graceful stop closes a connection that never began its TLS handshake (${balance})`, { skip }, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '--graceful-timeout', '60', '-b', '127.0.0.1:0', ...tlsFlags(), ECHO]);
    const { socket: silent, closed } = await silentConnection(forkgate.url);
    try {
      // Served after it: one worker takes its connections in order, so the silent one is in hand.
      assert.equal((await httpsGet(forkgate.url)).status, 200);
      const stopped = forkgate.stop();
      await within(30_000, 'the silent connection to be closed', closed);
      assert.equal((await within(30_000, 'the stop', stopped)).code, 0);
    } finally {
      silent.destroy();
    }
  });
}

for (const balance of ['round-robin', 'proxy']) {
  test(`a client that half-closes in its TLS handshake has the connection closed, not held to --headers-timeout (${balance})`, {
    skip,
  }, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '--headers-timeout', '60', '-b', '127.0.0.1:0', ...tlsFlags(), ECHO]);
    const { hostname, port } = new URL(forkgate.url);
    const leaving = net.connect({ port: Number(port), host: hostname, allowHalfOpen: true });
    leaving.on('error', () => {});
    try {
      await new Promise<void>((resolve) => leaving.once('connect', () => resolve()));
      leaving.end(); // a FIN where the ClientHello was due; the read side stays open to see forkgate's
      await within(10_000, 'forkgate to close the connection', new Promise((resolve) => leaving.once('end', resolve)));
      assert.equal((await httpsGet(forkgate.url)).status, 200, 'the pool serves on');
    } finally {
      leaving.destroy();
      await forkgate.stop();
    }
  });
}
