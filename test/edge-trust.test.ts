// Whom the edge believes: forwarding headers from --forwarded-allow-ips only, PROXY headers from
// --proxy-allow-from only; the app finds the client in req.socket.remoteAddress and X-Forwarded-For in
// every balance mode and with threads; requests get an X-Request-Id where ids are made, and only there.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { eventually, FIXTURES, request, start } from './helpers/forkgate.ts';
import { echoOf, exchange, ipv4Block, ipv6Block, proxyV2, statusOf, UUID } from './helpers/edge.ts';

const ECHO = `${FIXTURES}edge-echo.cjs`;
const ECHO_FETCH = `${FIXTURES}edge-echo-fetch.mjs`;
const scratch = mkdtempSync(join(tmpdir(), 'forkgate-edge-trust-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const SPOOFED = {
  'x-forwarded-for': '198.51.100.7',
  'x-forwarded-proto': 'https',
  'x-forwarded-host': 'evil.example',
  forwarded: 'for=198.51.100.7;proto=https',
};
const GET_CLOSE = 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';

test('forwarding headers from a trusted peer (loopback by default) are believed; an access log of X-Request-Id has one made, echoed and logged', async () => {
  const logFile = join(scratch, 'access.log');
  const forkgate = await start([
    '-w',
    '1',
    '-b',
    '127.0.0.1:0',
    '--access-logfile',
    logFile,
    '--access-logformat',
    '%(h)s %({x-request-id}i)s',
    ECHO,
  ]);
  try {
    const spoofed = await request(forkgate.url, { headers: SPOOFED });
    const seen = JSON.parse(spoofed.body) as { headers: Record<string, string> };
    assert.deepEqual(Object.fromEntries(Object.keys(SPOOFED).map((name) => [name, seen.headers[name]])), SPOOFED);
    const id = seen.headers['x-request-id']!;
    assert.match(id, UUID);
    assert.equal(spoofed.headers['x-request-id'], id);
    await eventually(() => readFileSync(logFile, 'utf8').includes(`127.0.0.1 ${id}\n`), 'the access log line with the request id');

    // Without X-Forwarded-For the app still finds the peer there; a request's own id is kept.
    const plain = await request(forkgate.url, { headers: { 'x-request-id': 'from-the-balancer' } });
    const plainSeen = JSON.parse(plain.body) as { headers: Record<string, string> };
    assert.equal(plainSeen.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(plainSeen.headers['x-request-id'], 'from-the-balancer');
    assert.equal(plain.headers['x-request-id'], 'from-the-balancer');
  } finally {
    await forkgate.stop();
  }
});

for (const app of [ECHO, ECHO_FETCH]) {
  test(`forwarding headers from an untrusted peer are removed, X-Forwarded-For is the peer (${app.split('/').pop()})`, async () => {
    const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--forwarded-allow-ips', '10.0.0.1', '--request-id', app]);
    try {
      const reply = await request(forkgate.url, { headers: SPOOFED });
      const { headers } = JSON.parse(reply.body) as { headers: Record<string, string> };
      assert.equal(headers['x-forwarded-for'], '127.0.0.1');
      for (const name of ['x-forwarded-proto', 'x-forwarded-host', 'forwarded']) assert.equal(headers[name], undefined, name);
      assert.match(headers['x-request-id']!, UUID);
      if (app === ECHO) {
        // An upgrade request too.
        const spoofing = Object.entries(SPOOFED)
          .map(([name, value]) => `${name}: ${value}\r\n`)
          .join('');
        const upgraded = await exchange(
          forkgate.url,
          `GET / HTTP/1.1\r\nHost: x\r\n${spoofing}Upgrade: echo\r\nConnection: Upgrade\r\n\r\n`,
        );
        assert.equal(statusOf(upgraded), 101);
        const upgradeHeaders = echoOf(upgraded).headers;
        assert.equal(upgradeHeaders['x-forwarded-for'], '127.0.0.1');
        assert.equal(upgradeHeaders['x-forwarded-proto'], undefined);
        // Every view agrees: rawHeaders too, each header once.
        const { rawHeaders } = JSON.parse(reply.body) as { rawHeaders: string[] };
        const names = rawHeaders.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase());
        assert.deepEqual(
          names.filter((name) => name.startsWith('x-forwarded') || name === 'forwarded'),
          ['x-forwarded-for'],
        );
        assert.equal(rawHeaders[rawHeaders.findIndex((name) => name.toLowerCase() === 'x-forwarded-for') + 1], '127.0.0.1');
      }
    } finally {
      await forkgate.stop();
    }
  });
}

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`--request-id: each request gets a new id, echoed; one the request brings is kept (${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--request-id', ECHO]);
    try {
      const [first, second] = [await request(forkgate.url), await request(forkgate.url)];
      const ids = [first, second].map((reply) => (JSON.parse(reply.body) as { headers: Record<string, string> }).headers['x-request-id']!);
      for (const id of ids) assert.match(id, UUID);
      assert.notEqual(ids[0], ids[1]);
      assert.deepEqual([first.headers['x-request-id'], second.headers['x-request-id']], ids);
      const brought = await request(forkgate.url, { headers: { 'x-request-id': 'from-the-balancer' } });
      assert.equal((JSON.parse(brought.body) as { headers: Record<string, string> }).headers['x-request-id'], 'from-the-balancer');
      assert.equal(brought.headers['x-request-id'], 'from-the-balancer');
    } finally {
      await forkgate.stop();
    }
  });

  test(`without --request-id no id is made or echoed; one the request brings reaches the app as it came (${balance})`, async () => {
    const logFile = join(scratch, `no-id-${balance}.log`);
    // An access log that does not log the id asks for none.
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--access-logfile', logFile, ECHO]);
    try {
      const bare = await request(forkgate.url);
      const seen = JSON.parse(bare.body) as { headers: Record<string, string>; rawHeaders: string[] };
      assert.equal(seen.headers['x-request-id'], undefined);
      assert.equal(bare.headers['x-request-id'], undefined);
      assert.ok(!seen.rawHeaders.some((name) => name.toLowerCase() === 'x-request-id'));
      assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
      const brought = await request(forkgate.url, { headers: { 'x-request-id': 'from-the-balancer' } });
      assert.equal((JSON.parse(brought.body) as { headers: Record<string, string> }).headers['x-request-id'], 'from-the-balancer');
      assert.equal(brought.headers['x-request-id'], undefined);
      await eventually(() => readFileSync(logFile, 'utf8').split('\n').length > 2, 'two access log lines');
    } finally {
      await forkgate.stop();
    }
  });
}

for (const balance of ['round-robin', 'reuseport', 'proxy']) {
  test(`PROXY v1 and v2 headers name the client the app sees (auto, ${balance})`, async () => {
    const forkgate = await start(['-w', '1', '--balance', balance, '-b', '127.0.0.1:0', '--proxy-protocol', 'auto', ECHO]);
    try {
      const v1 = echoOf(await exchange(forkgate.url, `PROXY TCP4 203.0.113.5 127.0.0.1 4242 80\r\n${GET_CLOSE}`));
      assert.deepEqual([v1.remoteAddress, v1.remotePort, v1.remoteFamily], ['203.0.113.5', 4242, 'IPv4']);
      assert.equal(v1.headers['x-forwarded-for'], '203.0.113.5');
      assert.equal(v1.hasEncrypted, false, 'a plain connection has no encrypted property, behind the proxy too');

      const v6 = ipv6Block('20010db8000000000000000000000042', '00000000000000000000000000000001', 51000, 80);
      const v2 = echoOf(await exchange(forkgate.url, [proxyV2(1, 0x21, v6), GET_CLOSE]));
      assert.deepEqual([v2.remoteAddress, v2.remotePort, v2.remoteFamily], ['2001:db8::42', 51000, 'IPv6']);
      assert.equal(v2.headers['x-forwarded-for'], '2001:db8::42');

      // LOCAL (a balancer's own health check) and, in auto, no header at all: the connection's own peer.
      assert.equal(echoOf(await exchange(forkgate.url, [proxyV2(0, 0x00, Buffer.alloc(0)), GET_CLOSE])).remoteAddress, '127.0.0.1');
      assert.equal(echoOf(await exchange(forkgate.url, GET_CLOSE)).remoteAddress, '127.0.0.1');

      // Every request on a kept-alive connection is the same client's.
      const twice = await exchange(forkgate.url, `PROXY TCP4 203.0.113.6 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n${GET_CLOSE}`);
      assert.equal(twice.received.match(/"remoteAddress":"203\.0\.113\.6"/g)?.length, 2);
    } finally {
      await forkgate.stop();
    }
  });
}

test('--proxy-protocol v1: a missing header, a v2 header or an invalid one closes the connection; the worker serves on', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--proxy-protocol', 'v1', ECHO]);
  try {
    const [pid] = forkgate.workerPids();
    const v2 = proxyV2(1, 0x11, ipv4Block('203.0.113.5', '127.0.0.1', 4242, 80));
    for (const payload of [GET_CLOSE, Buffer.concat([v2, Buffer.from(GET_CLOSE)]), `PROXY TCP4 nope 127.0.0.1 1 2\r\n${GET_CLOSE}`]) {
      assert.equal((await exchange(forkgate.url, payload)).received, '');
    }
    assert.equal(
      echoOf(await exchange(forkgate.url, `PROXY TCP4 203.0.113.5 127.0.0.1 4242 80\r\n${GET_CLOSE}`)).remoteAddress,
      '203.0.113.5',
    );
    assert.deepEqual(forkgate.workerPids(), [pid]);
  } finally {
    await forkgate.stop();
  }
});

for (const balance of ['round-robin', 'proxy']) {
  test(`a PROXY header from a peer not in --proxy-allow-from closes the connection; its plain requests are served (${balance})`, async () => {
    const forkgate = await start([
      '-w',
      '1',
      '--balance',
      balance,
      '-b',
      '127.0.0.1:0',
      '--proxy-protocol',
      'v2',
      '--proxy-allow-from',
      '10.0.0.1',
      ECHO,
    ]);
    try {
      const v2 = proxyV2(1, 0x11, ipv4Block('203.0.113.5', '127.0.0.1', 4242, 80));
      assert.equal((await exchange(forkgate.url, [v2, GET_CLOSE])).received, '');
      assert.equal((await exchange(forkgate.url, `PROXY TCP4 203.0.113.5 127.0.0.1 4242 80\r\n${GET_CLOSE}`)).received, '');
      assert.equal(echoOf(await exchange(forkgate.url, GET_CLOSE)).remoteAddress, '127.0.0.1');
    } finally {
      await forkgate.stop();
    }
  });
}

test('the client a PROXY header names is the peer --forwarded-allow-ips is checked against', async () => {
  const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--proxy-protocol', 'v1', '--forwarded-allow-ips', '10.1.0.0/16', ECHO]);
  try {
    const spoofing = `X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n`;
    const trusted = echoOf(
      await exchange(
        forkgate.url,
        `PROXY TCP4 10.1.2.3 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: x\r\n${spoofing}Connection: close\r\n\r\n`,
      ),
    );
    assert.equal(trusted.headers['x-forwarded-for'], '198.51.100.7');
    assert.equal(trusted.headers['x-forwarded-proto'], 'https');
    const untrusted = echoOf(
      await exchange(
        forkgate.url,
        `PROXY TCP4 10.2.2.3 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\nHost: x\r\n${spoofing}Connection: close\r\n\r\n`,
      ),
    );
    assert.equal(untrusted.headers['x-forwarded-for'], '10.2.2.3');
    assert.equal(untrusted.headers['x-forwarded-proto'], undefined);
  } finally {
    await forkgate.stop();
  }
});

test('with --threads every serving thread reads the PROXY header', async () => {
  const forkgate = await start(['-w', '1', '--threads', '2', '-b', '127.0.0.1:0', '--proxy-protocol', 'v1', ECHO]);
  try {
    // The kernel spreads connections over the threads' listeners: go on until both have answered.
    const threads = new Set<number>();
    for (let i = 1; i <= 100 && threads.size < 2; i++) {
      const seen = echoOf(await exchange(forkgate.url, `PROXY TCP4 203.0.113.${i} 127.0.0.1 ${i} 80\r\n${GET_CLOSE}`));
      assert.equal(seen.remoteAddress, `203.0.113.${i}`);
      assert.equal(seen.headers['x-forwarded-for'], `203.0.113.${i}`);
      threads.add(seen.threadId);
    }
    assert.equal(threads.size, 2, 'both threads served');
    assert.equal(statusOf(await exchange(forkgate.url, GET_CLOSE)), null);
  } finally {
    await forkgate.stop();
  }
});
