// The PROXY protocol parser (src/edge/proxy-protocol.ts) on the spec's examples and on broken input, and
// the reader (src/edge/read-proxy-header.ts) on a real loopback connection.
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { test } from 'node:test';
import { formatIPv6, parseProxyHeader, type ProxiedPeer } from '../src/edge/proxy-protocol.ts';
import { readProxyHeader, type ProxyHeaderPolicy } from '../src/edge/read-proxy-header.ts';
import { eventually } from './helpers/forkgate.ts';
import { ipv4Block, ipv6Block, proxyV2 } from './helpers/edge.ts';

test('v1: TCP4 and TCP6 name the client; the bytes after the CRLF are the connection', () => {
  const data = Buffer.from('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n');
  assert.deepEqual(parseProxyHeader(data), {
    state: 'parsed',
    version: 1,
    length: 47,
    source: { address: '192.168.0.1', port: 56324, family: 'IPv4' },
  });
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 ::1 65535 80\r\n')), {
    state: 'parsed',
    version: 1,
    length: 37,
    source: { address: '2001:db8::1', port: 65535, family: 'IPv6' },
  });
});

test('v1: UNKNOWN is accepted and names no client', () => {
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), { state: 'parsed', version: 1, length: 15, source: null });
  assert.deepEqual(parseProxyHeader(Buffer.from('PROXY UNKNOWN ffff::1 ::1 1 2\r\n')).state, 'parsed');
});

test('v1: a line still arriving is incomplete; a broken one is invalid', () => {
  for (const partial of ['P', 'PROX', 'PROXY ', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r']) {
    assert.deepEqual(parseProxyHeader(Buffer.from(partial)), { state: 'incomplete' }, partial);
  }
  const invalid = [
    'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', // a port missing
    'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', // one field too many
    'PROXY TCP4 ::1 5.6.7.8 1 2\r\n', // IPv6 under TCP4
    'PROXY TCP6 1.2.3.4 ::1 1 2\r\n', // IPv4 under TCP6
    'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', // port out of range
    'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', // leading zero
    'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n',
    'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n', // two spaces
    `PROXY TCP4 ${'1'.repeat(120)}`, // no CRLF within 107 bytes
  ];
  for (const line of invalid) assert.equal(parseProxyHeader(Buffer.from(line)).state, 'invalid', line);
});

test('v2: PROXY over TCP/IPv4 and TCP/IPv6, TLVs skipped', () => {
  const tlv = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]); // PP2_TYPE_NOOP, 3 bytes
  const v4 = proxyV2(1, 0x11, Buffer.concat([ipv4Block('203.0.113.7', '10.0.0.1', 40000, 443), tlv]));
  const after = Buffer.from('GET / HTTP/1.1\r\n');
  assert.deepEqual(parseProxyHeader(Buffer.concat([v4, after])), {
    state: 'parsed',
    version: 2,
    length: v4.length,
    source: { address: '203.0.113.7', port: 40000, family: 'IPv4' },
  });

  const v6 = ipv6Block('20010db8000000000000000000000042', '00000000000000000000000000000001', 51000, 443);
  assert.deepEqual(parseProxyHeader(proxyV2(1, 0x21, v6)), {
    state: 'parsed',
    version: 2,
    length: 52,
    source: { address: '2001:db8::42', port: 51000, family: 'IPv6' },
  });
});

test('v2: LOCAL (a health check) and families without a TCP client name no client', () => {
  assert.deepEqual(parseProxyHeader(proxyV2(0, 0x00, Buffer.alloc(0))), { state: 'parsed', version: 2, length: 16, source: null });
  assert.deepEqual(parseProxyHeader(proxyV2(0, 0x11, ipv4Block('1.2.3.4', '5.6.7.8', 1, 2))).state, 'parsed');
  assert.equal((parseProxyHeader(proxyV2(1, 0x12, ipv4Block('1.2.3.4', '5.6.7.8', 1, 2))) as { source: unknown }).source, null); // UDP
  assert.equal((parseProxyHeader(proxyV2(1, 0x31, Buffer.alloc(216))) as { source: unknown }).source, null); // unix
});

test('v2: a header still arriving is incomplete; a broken one is invalid', () => {
  const whole = proxyV2(1, 0x11, ipv4Block('1.2.3.4', '5.6.7.8', 1, 2));
  for (const length of [1, 5, 12, 15, 16, whole.length - 1]) {
    assert.deepEqual(parseProxyHeader(whole.subarray(0, length)), { state: 'incomplete' }, `${length} bytes`);
  }
  const badVersion = Buffer.from(whole);
  badVersion[12] = 0x11;
  assert.equal(parseProxyHeader(badVersion).state, 'invalid');
  const badCommand = Buffer.from(whole);
  badCommand[12] = 0x22;
  assert.equal(parseProxyHeader(badCommand).state, 'invalid');
  assert.equal(parseProxyHeader(proxyV2(1, 0x11, Buffer.alloc(8))).state, 'invalid'); // IPv4 block too short
  assert.equal(parseProxyHeader(proxyV2(1, 0x21, Buffer.alloc(20))).state, 'invalid'); // IPv6 block too short
});

test('anything else is absent, including methods that begin like PROXY', () => {
  for (const start of ['GET / HTTP/1.1\r\n', 'PROPFIND / HTTP/1.1\r\n', 'PUT', '\r\nGET', '\x16\x03\x01']) {
    assert.deepEqual(parseProxyHeader(Buffer.from(start, 'latin1')), { state: 'absent' }, JSON.stringify(start));
  }
});

test('IPv6 addresses are written as Node writes them', () => {
  const cases: [string, string][] = [
    ['00000000000000000000000000000001', '::1'],
    ['00000000000000000000000000000000', '::'],
    ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'], // the first of two equal runs
    ['20010db8000100020003000400050006', '2001:db8:1:2:3:4:5:6'],
    ['20010db8000000010000000000000001', '2001:db8:0:1::1'],
    ['00000000000000000000ffffc0000201', '::ffff:192.0.2.1'],
    ['fe800000000000000000000000000000', 'fe80::'],
  ];
  for (const [hex, text] of cases) assert.equal(formatIPv6(Buffer.from(hex, 'hex')), text, hex);
});

type ReadOutcome = { source: ProxiedPeer | null; rest: string } | { refused: string };

/**
 * Runs readProxyHeader on the server side of a loopback connection. Each part is written once the server
 * has read everything before it, so a header split across reads is really split. After the header, the
 * server collects what remains until the client ends (unless told not to end: the server must decide
 * alone): the bytes the next reader would get.
 */
async function readOverLoopback(policy: ProxyHeaderPolicy, parts: (string | Buffer)[], end = true): Promise<ReadOutcome> {
  let serverSide!: net.Socket;
  const outcome = new Promise<ReadOutcome>((resolve) => {
    const server = net.createServer((socket) => {
      serverSide = socket;
      server.close();
      readProxyHeader(
        socket,
        policy,
        (source) => {
          let rest = '';
          socket.on('data', (chunk: Buffer) => (rest += chunk.toString('latin1')));
          socket.on('end', () => resolve({ source, rest }));
          socket.resume();
        },
        (reason) => resolve({ refused: reason }),
      );
    });
    server.listen(0, '127.0.0.1', async () => {
      const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      client.on('error', () => {}); // a refused connection is reset
      await new Promise((connected) => client.once('connect', connected));
      let sent = 0;
      for (const part of parts) {
        client.write(part);
        sent += Buffer.byteLength(part);
        await eventually(() => serverSide?.bytesRead >= sent || serverSide?.destroyed, 'the server to read the part');
      }
      if (end) client.end();
      else void outcome.then(() => client.destroy());
    });
  });
  return outcome;
}

const ALLOWED_V1: ProxyHeaderPolicy = { mode: 'v1', allowed: true, timeoutMs: 5000 };

test('reader: a header split across reads is put together; the bytes after it stay for the HTTP parser', async () => {
  const outcome = await readOverLoopback(ALLOWED_V1, ['PROXY TCP4 203.0.113.', '9 10.0.0.1 4000 80\r\nGET / HT', 'TP/1.1\r\n\r\n']);
  assert.deepEqual(outcome, { source: { address: '203.0.113.9', port: 4000, family: 'IPv4' }, rest: 'GET / HTTP/1.1\r\n\r\n' });
});

test('reader: without a header, auto and peers that may not send one pass every byte on', async () => {
  for (const policy of [
    { ...ALLOWED_V1, mode: 'auto' as const },
    { ...ALLOWED_V1, allowed: false },
  ]) {
    assert.deepEqual(await readOverLoopback(policy, ['P', 'UT / HTTP/1.1\r\n\r\n']), { source: null, rest: 'PUT / HTTP/1.1\r\n\r\n' });
  }
});

test('reader: refuses a missing header where required, the wrong version, a header from a peer not allowed, and silence', async () => {
  const v2 = proxyV2(1, 0x11, ipv4Block('1.2.3.4', '5.6.7.8', 1, 2));
  const refused = async (policy: ProxyHeaderPolicy, parts: (string | Buffer)[]) => {
    const outcome = await readOverLoopback(policy, parts, false);
    assert.ok('refused' in outcome, `expected a refusal, got ${JSON.stringify(outcome)}`);
    return outcome.refused;
  };
  assert.match(await refused(ALLOWED_V1, ['GET / HTTP/1.1\r\n\r\n']), /no PROXY header/);
  assert.match(await refused(ALLOWED_V1, [v2]), /PROXY v2 header \(--proxy-protocol v1\)/);
  assert.match(await refused({ ...ALLOWED_V1, mode: 'auto', allowed: false }, [v2]), /not in --proxy-allow-from/);
  assert.match(await refused(ALLOWED_V1, ['PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n']), /invalid PROXY header/);
  assert.match(await refused({ ...ALLOWED_V1, timeoutMs: 200 }, ['PROXY TCP4 1.2']), /within --headers-timeout/);
});
