import assert from 'node:assert/strict';
import http, { IncomingMessage, ServerResponse } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, Socket, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  accessLogUsesRequestId,
  compileAccessLogFormat,
  DEFAULT_ACCESS_LOG_FORMAT,
  JSON_ACCESS_LOG_FORMAT,
  type AccessLogRecord,
} from '../src/log/access-log.ts';
import { answeredStatus } from '../src/log/status.ts';
import { eventually, FIXTURES, request, start, startRequest } from './helpers/forkgate.ts';

const OPS = `${FIXTURES}ops.cjs`;

interface Fake {
  method?: string;
  url?: string;
  headers?: Record<string, string>;
  status?: number;
  /** The client left before the answer: no head was sent. */
  unanswered?: boolean;
  responseHeaders?: Record<string, string | string[] | number>;
  bodyBytes?: number;
  durationNs?: bigint;
  startedAt?: number;
}

/** Real IncomingMessage/ServerResponse objects, filled in by hand, for checking one atom at a time. */
function record(fake: Fake = {}): AccessLogRecord {
  const req = new IncomingMessage(new Socket());
  req.method = fake.method ?? 'GET';
  req.url = fake.url ?? '/items?id=7';
  req.httpVersion = '1.1';
  req.headers = fake.headers ?? {};
  const res = new ServerResponse(req);
  for (const [name, value] of Object.entries(fake.responseHeaders ?? {})) res.setHeader(name, value);
  if (fake.unanswered) res.statusCode = fake.status ?? 200;
  else res.writeHead(fake.status ?? 200); // the head as sent, with no socket to send it on
  return {
    req,
    res,
    status: answeredStatus(res),
    startedAt: fake.startedAt ?? Date.UTC(2026, 10, 27, 6, 41, 58),
    durationNs: fake.durationNs ?? 1_234_567_891n,
    bodyBytes: fake.bodyBytes ?? 512,
    remoteAddress: '10.0.0.5',
    pid: 4242,
  };
}

function render(format: string, fake?: Fake): string {
  return compileAccessLogFormat(format)(record(fake));
}

function withTimeZone(zone: string, run: () => void): void {
  const previous = process.env.TZ;
  process.env.TZ = zone;
  try {
    run();
  } finally {
    if (previous === undefined) delete process.env.TZ;
    else process.env.TZ = previous;
  }
}

describe('access log atoms', () => {
  test('request line and its pieces', () => {
    const fake = { method: 'POST', url: '/a/b?x=1&y=2' };
    assert.equal(render('%(r)s', fake), 'POST /a/b?x=1&y=2 HTTP/1.1');
    assert.equal(render('%(m)s', fake), 'POST');
    assert.equal(render('%(U)s', fake), '/a/b');
    assert.equal(render('%(q)s', fake), 'x=1&y=2');
    assert.equal(render('%(q)s', { url: '/plain' }), '');
    assert.equal(render('%(U)s', { url: '/plain' }), '/plain');
    assert.equal(render('%(H)s'), 'HTTP/1.1');
  });

  test('client, user and constant atoms', () => {
    assert.equal(render('%(h)s'), '10.0.0.5');
    assert.equal(compileAccessLogFormat('%(h)s')({ ...record(), remoteAddress: undefined }), '-');
    assert.equal(render('%(l)s'), '-');
    assert.equal(render('%(p)s'), '<4242>');
  });

  test('u is the Basic auth user name', () => {
    const basic = (credentials: string) => `Basic ${Buffer.from(credentials).toString('base64')}`;
    assert.equal(render('%(u)s', { headers: { authorization: basic('alice:s3cret') } }), 'alice');
    assert.equal(render('%(u)s', { headers: { authorization: basic('bob') } }), 'bob');
    assert.equal(render('%(u)s', { headers: { authorization: `basic  ${Buffer.from('carol:x').toString('base64')}` } }), 'carol');
    assert.equal(render('%(u)s', { headers: { authorization: basic(':only-password') } }), '-');
    assert.equal(render('%(u)s', { headers: { authorization: 'Bearer abc.def' } }), '-');
    assert.equal(render('%(u)s'), '-');
  });

  test('status and body size', () => {
    assert.equal(render('%(s)s', { status: 404 }), '404');
    assert.equal(
      render('%(s)s', { unanswered: true }),
      '499',
      "a client that left before the answer, as nginx logs it, not Node's preset 200",
    );
    assert.equal(render('%(B)s %(b)s', { bodyBytes: 512 }), '512 512');
    assert.equal(render('%(B)s %(b)s', { bodyBytes: 0 }), '0 -');
  });

  test('referer and user agent', () => {
    const headers = { referer: 'https://example.com/from', 'user-agent': 'curl/8.5.0' };
    assert.equal(render('%(f)s|%(a)s', { headers }), 'https://example.com/from|curl/8.5.0');
    assert.equal(render('%(f)s|%(a)s'), '-|-');
  });

  test('durations in seconds, micro-, milliseconds and decimal seconds', () => {
    const durationNs = 1_234_567_891n;
    assert.equal(render('%(T)s', { durationNs }), '1');
    assert.equal(render('%(D)s', { durationNs }), '1234567');
    assert.equal(render('%(M)s', { durationNs }), '1234');
    assert.equal(render('%(L)s', { durationNs }), '1.234567');
    assert.equal(render('%(L)s', { durationNs: 42_000n }), '0.000042');
    assert.equal(render('%(T)s %(D)s %(M)s', { durationNs: 0n }), '0 0 0');
  });

  test('t is local time with its UTC offset', () => {
    const startedAt = Date.UTC(2026, 10, 27, 6, 41, 58);
    withTimeZone('UTC', () => assert.equal(render('%(t)s', { startedAt }), '[27/Nov/2026:06:41:58 +0000]'));
    withTimeZone('Asia/Kolkata', () => assert.equal(render('%(t)s', { startedAt }), '[27/Nov/2026:12:11:58 +0530]'));
    withTimeZone('America/St_Johns', () => assert.equal(render('%(t)s', { startedAt }), '[27/Nov/2026:03:11:58 -0330]'));
    withTimeZone('UTC', () => assert.equal(render('%(t)s', { startedAt: Date.UTC(2026, 0, 5, 0, 0, 7) }), '[05/Jan/2026:00:00:07 +0000]'));
  });

  test('{name}i request headers, case-insensitive', () => {
    const headers = { 'x-forwarded-for': '203.0.113.9', 'x-multi': 'a, b' };
    assert.equal(render('%({X-Forwarded-For}i)s', { headers }), '203.0.113.9');
    assert.equal(render('%({x-multi}I)s', { headers }), 'a, b');
    assert.equal(render('%({x-missing}i)s', { headers }), '-');
  });

  test('{name}o response headers, case-insensitive', () => {
    const responseHeaders = { 'Content-Type': 'text/html', 'Set-Cookie': ['a=1', 'b=2'], 'Content-Length': 12 };
    assert.equal(render('%({content-type}o)s', { responseHeaders }), 'text/html');
    assert.equal(render('%({SET-COOKIE}o)s', { responseHeaders }), 'a=1, b=2');
    assert.equal(render('%({content-length}o)s', { responseHeaders }), '12');
    assert.equal(render('%({etag}o)s', { responseHeaders }), '-');
  });

  test('{name}e environment variables, case-insensitive', () => {
    process.env.FORKGATE_TEST_ZONE = 'eu-west';
    try {
      assert.equal(render('%({forkgate_test_zone}e)s'), 'eu-west');
      assert.equal(render('%({FORKGATE_TEST_ZONE}e)s'), 'eu-west');
    } finally {
      delete process.env.FORKGATE_TEST_ZONE;
    }
    assert.equal(render('%({forkgate_test_unset}e)s'), '-');
  });

  test('unknown atoms and malformed lookups render -', () => {
    assert.equal(render('[%(Z)s] [%(x)s] [%({a}z)s] [%({}i)s] [%({host)s]'), '[-] [-] [-] [-] [-]');
  });

  test('%% is a literal %, and a stray % stays as text', () => {
    assert.equal(render('100%% %(s)s'), '100% 200');
    assert.equal(render('50% off (%(m)s'), '50% off (GET');
    assert.equal(render('tail %'), 'tail %');
    assert.equal(render('%(unclosed'), '%(unclosed');
  });

  test('conversion letters s and d are consumed, other text is kept', () => {
    assert.equal(render('%(s)d %(B)d %(m)s!'), '200 512 GET!');
    assert.equal(render('%(s)x'), '200x');
  });

  test('quotes, backslashes and control characters are escaped so a request cannot forge a line', () => {
    const headers = {
      'user-agent': 'evil" "injected\n127.0.0.1 - - [fake]',
      referer: 'C:\\path\t\x1b[31mred\x9b',
    };
    assert.equal(render('"%(a)s"', { headers }), '"evil\\" \\"injected\\x0a127.0.0.1 - - [fake]"');
    assert.equal(render('%(f)s', { headers }), 'C:\\\\path\\x09\\x1b[31mred\\x9b');
    assert.equal(render('%(r)s', { url: '/a"b\r\nc' }), 'GET /a\\"b\\x0d\\x0ac HTTP/1.1');
    assert.equal(render('%({x-h}i)s', { headers: { 'x-h': '\x00\x7f' } }), '\\x00\\x7f');
    const forged = `Basic ${Buffer.from('mallory\n:x').toString('base64')}`;
    assert.equal(render('%(u)s', { headers: { authorization: forged } }), 'mallory\\x0a');
    assert.equal(render('%(a)s', { headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux) café' } }), 'Mozilla/5.0 (X11; Linux) café');
  });

  test('the default format renders a Gunicorn/Apache combined line', () => {
    const basic = `Basic ${Buffer.from('alice:pw').toString('base64')}`;
    const line = render(DEFAULT_ACCESS_LOG_FORMAT, {
      headers: { authorization: basic, referer: 'https://example.com/', 'user-agent': 'test-agent/1.0' },
      status: 201,
      bodyBytes: 99,
    });
    assert.match(
      line,
      /^10\.0\.0\.5 - alice \[\d{2}\/Nov\/2026:\d{2}:\d{2}:58 [+-]\d{4}\] "GET \/items\?id=7 HTTP\/1\.1" 201 99 "https:\/\/example\.com\/" "test-agent\/1\.0"$/,
    );
  });
});

describe('the json access log format', () => {
  test('one JSON object per request: the fields of the atoms, numbers as numbers, absent values null', () => {
    const line = render(JSON_ACCESS_LOG_FORMAT, {
      method: 'POST',
      url: '/a/b?x=1',
      headers: { referer: 'https://example.com/', 'user-agent': 'agent "quoted"\nsecond line', 'x-request-id': 'req-7' },
      status: 201,
      bodyBytes: 99,
      durationNs: 1_234_567_891n,
    });
    assert.doesNotMatch(line, /\n/, 'one line, whatever the request carried');
    assert.deepEqual(JSON.parse(line), {
      remote_addr: '10.0.0.5',
      time: '2026-11-27T06:41:58.000Z',
      method: 'POST',
      path: '/a/b',
      query: 'x=1',
      protocol: 'HTTP/1.1',
      status: 201,
      bytes: 99,
      referer: 'https://example.com/',
      user_agent: 'agent "quoted"\nsecond line',
      duration_us: 1_234_567,
      pid: 4242,
      request_id: 'req-7',
    });
    const bare = JSON.parse(compileAccessLogFormat(JSON_ACCESS_LOG_FORMAT)({ ...record({ url: '/plain' }), remoteAddress: undefined }));
    assert.deepEqual([bare.remote_addr, bare.query, bare.referer, bare.user_agent, bare.request_id], [null, null, null, null, null]);
  });
});

describe('which formats log the request id', () => {
  test('json and the {x-request-id}i and {x-request-id}o lookups do, in any case; a literal %% before one does not', () => {
    for (const format of [JSON_ACCESS_LOG_FORMAT, '%(h)s %({x-request-id}i)s', '%({X-Request-Id}o)s', '%%%({x-request-id}i)s']) {
      assert.equal(accessLogUsesRequestId(format), true, format);
    }
    for (const format of [DEFAULT_ACCESS_LOG_FORMAT, '%%({x-request-id}i)s', '%({x-request-id}e)s', 'x-request-id']) {
      assert.equal(accessLogUsesRequestId(format), false, format);
    }
  });
});

describe('access log on a real server', () => {
  const lines: string[] = [];
  let server: http.Server;
  let port: number;
  const format = compileAccessLogFormat(`${DEFAULT_ACCESS_LOG_FORMAT} %(D)s %({content-type}o)s %({x-request-id}i)s %({x-written}o)s`);

  before(async () => {
    server = http.createServer((req, res) => {
      const startedAt = Date.now();
      const started = process.hrtime.bigint();
      const body = req.url === '/empty' ? '' : 'hello world';
      res.on('finish', () => {
        lines.push(
          format({
            req,
            res,
            status: res.statusCode,
            startedAt,
            durationNs: process.hrtime.bigint() - started,
            bodyBytes: Buffer.byteLength(body),
            remoteAddress: req.socket.remoteAddress,
            pid: process.pid,
          }),
        );
      });
      if (req.url === '/empty') {
        res.statusCode = 204;
        res.end();
        return;
      }
      res.setHeader('Content-Type', 'text/plain');
      // writeHead's own headers bypass getHeader(): the formatter must still find them.
      res.writeHead(200, { 'X-Written': 'yes' });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** http.get rather than fetch: it sends the path as given and adds no User-Agent of its own. */
  async function get(path: string, headers: Record<string, string> = {}): Promise<string> {
    lines.length = 0;
    await new Promise<void>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path, headers }, (response) => response.resume().on('end', resolve)).on('error', reject);
    });
    // 'finish' can land just after the client has the body.
    while (lines.length === 0) await new Promise((resolve) => setImmediate(resolve));
    return lines[0]!;
  }

  test('a full request', async () => {
    const line = await get('/hello?name=ann', {
      authorization: `Basic ${Buffer.from('ann:pw').toString('base64')}`,
      referer: 'http://127.0.0.1/start',
      'user-agent': 'forkgate-test',
      'x-request-id': 'req-1',
    });
    assert.match(
      line,
      /^127\.0\.0\.1 - ann \[\d{2}\/[A-Z][a-z]{2}\/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET \/hello\?name=ann HTTP\/1\.1" 200 11 "http:\/\/127\.0\.0\.1\/start" "forkgate-test" \d+ text\/plain req-1 yes$/,
    );
  });

  test('an empty response without referer or user agent', async () => {
    const line = await get('/empty');
    assert.match(line, /^127\.0\.0\.1 - - \[[^\]]+\] "GET \/empty HTTP\/1\.1" 204 - "-" "-" \d+ - - -$/);
  });

  test('quotes in the URL are escaped', async () => {
    const line = await get('/say"hi"');
    assert.match(line, / "GET \/say\\"hi\\" HTTP\/1\.1" 200 /);
  });
});

describe("forkgate's own answers in the access log, each request once", () => {
  const scratch = mkdtempSync(join(tmpdir(), 'forkgate-access-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));
  // who wrote each line: the master's pid or a unit's
  const FORMAT = '%(s)s %(U)s %(p)s';

  /** The first line of what the server answers to these raw bytes. */
  function rawAnswer(url: string, text: string): Promise<string> {
    const { hostname, port } = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), hostname, () => socket.end(text));
      let answer = '';
      socket.setEncoding('latin1').on('data', (chunk: string) => (answer += chunk));
      socket.on('close', () => resolve(answer.split('\r\n')[0]!));
      socket.on('error', reject);
    });
  }

  /** The log's lines once it has `count` of them (never more: each request is logged once). */
  async function lines(file: string, count: number): Promise<string[]> {
    const read = () => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);
    await eventually(() => read().length >= count, `${count} access log lines`).catch((error: Error) => {
      throw new Error(`${error.message}; it has: ${read().join(' | ')}`);
    });
    return read().sort();
  }

  const TWO_HOSTS = 'GET /two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n';
  const UPGRADE_TWO_HOSTS = 'GET /upgrade HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n';

  test('round-robin: the edge refusing a request logs it in the worker, as the app its own', async () => {
    const log = join(scratch, 'round-robin.log');
    const forkgate = await start(['-w', '1', '-b', '127.0.0.1:0', '--access-logfile', log, '--access-logformat', FORMAT, OPS]);
    try {
      const [worker] = forkgate.workerPids();
      assert.equal((await request(`${forkgate.url}/pid`)).status, 200);
      assert.equal(await rawAnswer(forkgate.url, TWO_HOSTS), 'HTTP/1.1 400 Bad Request');
      assert.equal(await rawAnswer(forkgate.url, UPGRADE_TWO_HOSTS), 'HTTP/1.1 400 Bad Request');
      assert.deepEqual(await lines(log, 3), [`200 /pid <${worker}>`, `400 /two-hosts <${worker}>`, `400 /upgrade <${worker}>`]);
    } finally {
      await forkgate.stop();
    }
  });

  test('a HEAD is logged with no body bytes, and a request cut by a bad chunk with the 400 it got, at once', async () => {
    const log = join(scratch, 'bytes.log');
    const args = ['-w', '1', '-b', '127.0.0.1:0', '--access-logfile', log, '--access-logformat', '%(m)s %(s)s %(b)s'];
    const forkgate = await start([...args, `${FIXTURES}edge-echo.cjs`]);
    try {
      assert.equal((await request(forkgate.url, { method: 'HEAD' })).status, 200);
      // the connection stays open: the answer comes as the bad bytes do, not when the client leaves
      const { hostname, port } = new URL(forkgate.url);
      const socket = connect(Number(port), hostname, () =>
        socket.write('POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n'),
      );
      let answer = '';
      socket.setEncoding('latin1').on('data', (chunk: string) => (answer += chunk));
      socket.on('error', () => {});
      await eventually(() => answer.startsWith('HTTP/1.1 400 '), 'the 400', 5000);
      socket.destroy();
      assert.deepEqual(await lines(log, 2), ['HEAD 200 -', 'POST 400 -']);
    } finally {
      await forkgate.stop();
    }
  });

  test('proxy: the master logs its refusals, 502, 503 and a client gone while queued; a unit what it answered', async () => {
    const log = join(scratch, 'proxy.log');
    const admin = join(scratch, 'admin.sock');
    const forkgate = await start([
      ...['-w', '1', '-k', 'sync', '--balance', 'proxy', '--queue-timeout', '1', '-b', '127.0.0.1:0', '--admin-bind', `unix:${admin}`],
      ...['--access-logfile', log, '--access-logformat', FORMAT, OPS],
    ]);
    const master = forkgate.process.pid!;
    const queued = async () => JSON.parse((await request('http://admin/status', { socketPath: admin })).body).queued as number;
    try {
      const [worker] = forkgate.workerPids();
      assert.equal(await rawAnswer(forkgate.url, TWO_HOSTS), 'HTTP/1.1 400 Bad Request');
      assert.equal(await rawAnswer(forkgate.url, UPGRADE_TWO_HOSTS), 'HTTP/1.1 400 Bad Request');
      // The one sync unit is busy: what comes meanwhile waits in the master's queue.
      const slow = startRequest(`${forkgate.url}/slow?ms=4000`);
      await slow.headers;
      const timedOut = request(`${forkgate.url}/queue-timeout`);
      const gone = connect(Number(new URL(forkgate.url).port), '127.0.0.1', () => gone.write('GET /gone HTTP/1.1\r\nHost: a\r\n\r\n'));
      gone.on('error', () => {});
      await eventually(async () => (await queued()) === 2, 'two requests queued');
      gone.destroy();
      assert.equal((await timedOut).status, 503);
      assert.equal((await slow.reply).status, 200);
      assert.equal((await request(`${forkgate.url}/exit`, { method: 'POST' })).status, 502, 'its unit died with it');
      assert.deepEqual(await lines(log, 6), [
        `200 /slow <${worker}>`,
        `400 /two-hosts <${master}>`,
        `400 /upgrade <${master}>`,
        `499 /gone <${master}>`,
        `502 /exit <${master}>`,
        `503 /queue-timeout <${master}>`,
      ]);
      assert.match(forkgate.output, /proxy: GET \/queue-timeout answered 503: queue timeout\n/);
      assert.match(forkgate.output, /proxy: POST \/exit to \S+ failed: /);
    } finally {
      await forkgate.stop();
    }
  });
});
