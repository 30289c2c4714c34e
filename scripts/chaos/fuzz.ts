/**
 * The HTTP fuzzer: malformed and request-smuggling requests generated from a seed (the same seed gives
 * the same cases, in every mode), each sent on a raw TCP connection of its own. A case passes if what
 * came back is clean HTTP with no 5xx, or the connection closed, within a bound whenever the request was
 * complete; and if, right after it, well-formed requests on new connections each get exactly their own
 * answer promptly (a desynchronised connection inside forkgate, such as the proxy's pooled connection to
 * a unit, would hand a later client someone else's answer or swallow its request).
 */
import { rawExchange, header, type RawResult } from './http-client.ts';

export interface FuzzCase {
  index: number;
  name: string;
  bytes: Buffer;
  /** The method of each request in the bytes, in order (a HEAD's answer has no body). */
  methods: string[];
  /** Every byte the request declares was sent: the server owes an answer (or a close) at once. */
  complete: boolean;
  /** Leading requests that are well-formed: each must get its own 200 echo. */
  valid: Echo[];
}

/** What the echo of a well-formed request must show. */
interface Echo {
  url: string;
  nonce: string;
  method: string;
  body: string;
}

/** mulberry32: small, fast, and the same sequence on every machine. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rng = () => number;
const pick = <T>(rng: Rng, items: readonly T[]): T => items[Math.floor(rng() * items.length)]!;
const int = (rng: Rng, low: number, high: number) => low + Math.floor(rng() * (high - low + 1));
const token = (rng: Rng, length: number) => Array.from({ length }, () => pick(rng, [...'abcdefghijklmnopqrstuvwxyz0123456789'])).join('');

/** One request as parts: the generator breaks one part at a time. */
interface Parts {
  requestLine: string;
  headers: string[];
  body: string;
  eol: string;
  complete: boolean;
  method: string;
}

/** A well-formed request to /echo; `delayMs` has the fixture answer that much later. */
function echoRequest(rng: Rng, method = pick(rng, ['GET', 'POST']), delayMs = 0): { parts: Parts; expected: Echo } {
  const nonce = token(rng, 10);
  const body = method === 'POST' ? token(rng, int(rng, 0, 40)) : '';
  const url = `/echo?n=${nonce}${delayMs ? `&delay=${delayMs}` : ''}`;
  const headers = ['Host: chaos', `x-chaos-nonce: ${nonce}`, ...(method === 'POST' ? [`Content-Length: ${body.length}`] : [])];
  return {
    parts: { requestLine: `${method} ${url} HTTP/1.1`, headers, body, eol: '\r\n', complete: true, method },
    expected: { url, nonce, method, body },
  };
}

function serialize(parts: Parts): string {
  return `${parts.requestLine}${parts.eol}${parts.headers.map((line) => `${line}${parts.eol}`).join('')}${parts.eol}${parts.body}`;
}

const PATHS = ['/', '/pid', '/echo'];

/** Each breaks one request in one way; `complete` is false where the server may rightly wait for more. */
const MUTATIONS: Record<string, (rng: Rng) => Parts> = {
  'bad request line': (rng) => {
    const line = pick(rng, [
      `GET /echo HTTP/1.1 ${token(rng, 3)}`,
      'GET\t/echo HTTP/1.1',
      'GET /echo HTTP/2.0',
      'GET /echo HTTP/1.10',
      `G${pick(rng, ['@', '(', ',', '"'])}T /echo HTTP/1.1`,
      '/echo HTTP/1.1',
      ' GET /echo HTTP/1.1',
      'GET /ec ho HTTP/1.1',
      'GET  /echo HTTP/1.1',
      'GET /echo',
      `GET /${'a'.repeat(int(rng, 4200, 20_000))} HTTP/1.1`,
      Array.from({ length: int(rng, 5, 60) }, () => String.fromCharCode(int(rng, 33, 126))).join(''),
      'GET http://[::1/echo HTTP/1.1',
      'GET /echo HTTP/1.1\r',
    ]);
    return { requestLine: line, headers: ['Host: chaos'], body: '', eol: '\r\n', complete: true, method: 'GET' };
  },
  'bad header name': (rng) => ({
    requestLine: `GET ${pick(rng, PATHS)} HTTP/1.1`,
    headers: [
      'Host: chaos',
      pick(rng, ['Bad Header: x', 'X(y): z', ': empty name', 'X-A : space before colon', 'X\u007f: del', 'Na\u00efve: x', 'X-A', '@: at']),
    ],
    body: '',
    eol: '\r\n',
    complete: true,
    method: 'GET',
  }),
  'obs-fold': (rng) => ({
    requestLine: `GET ${pick(rng, PATHS)} HTTP/1.1`,
    headers: ['Host: chaos', `X-Folded: first${pick(rng, ['\r\n  second', '\r\n\tsecond'])}`],
    body: '',
    eol: '\r\n',
    complete: true,
    method: 'GET',
  }),
  'duplicate Content-Length': (rng) => {
    const a = int(rng, 0, 30);
    const b = a + int(rng, 1, 30);
    const [first, second] = rng() < 0.5 ? [a, b] : [b, a];
    return {
      requestLine: 'POST /echo HTTP/1.1',
      headers: ['Host: chaos', `Content-Length: ${first}`, `Content-Length: ${second}`],
      body: 'x'.repeat(b),
      eol: '\r\n',
      complete: true,
      method: 'POST',
    };
  },
  'Content-Length and Transfer-Encoding': (rng) => {
    const smuggled = `GET /echo?n=smuggled HTTP/1.1\r\nHost: chaos\r\nx-chaos-nonce: smuggled\r\n\r\n`;
    const chunked = `0\r\n\r\n${smuggled}`;
    const te = pick(rng, ['chunked', 'Chunked', ' chunked', 'chunked, identity', 'identity, chunked', 'xchunked', 'chunked\t']);
    const length = pick(rng, [4, 5, chunked.length]);
    const headers = ['Host: chaos', `Content-Length: ${length}`, `Transfer-Encoding: ${te}`];
    if (rng() < 0.5) headers.reverse();
    return { requestLine: 'POST /echo HTTP/1.1', headers, body: chunked, eol: '\r\n', complete: true, method: 'POST' };
  },
  'Transfer-Encoding twice': () => ({
    requestLine: 'POST /echo HTTP/1.1',
    headers: ['Host: chaos', 'Transfer-Encoding: chunked', 'Transfer-Encoding: identity'],
    body: '3\r\nabc\r\n0\r\n\r\n',
    eol: '\r\n',
    complete: true,
    method: 'POST',
  }),
  'bad chunk size': (rng) => {
    const [body, complete] = pick(rng, [
      ['zz\r\nabc\r\n0\r\n\r\n', true],
      ['-1\r\nabc\r\n0\r\n\r\n', true],
      ['0x3\r\nabc\r\n0\r\n\r\n', true],
      ['fffffffffffffffffff\r\nabc\r\n0\r\n\r\n', true],
      ['3 ;ext\r\nabc\r\n0\r\n\r\n', true],
      ['3\nabc\n0\n\n', true],
      ['5\r\nabc\r\n0\r\n\r\n', false], // the chunk is short: the server may wait for its last bytes
      [`3;${'e'.repeat(20_000)}\r\nabc\r\n0\r\n\r\n`, true],
      ['3\r\nabcX\r\n0\r\n\r\n', true],
      ['ffffff\r\nabc', false], // a large chunk, announced and begun
    ] as const);
    return {
      requestLine: 'POST /echo HTTP/1.1',
      headers: ['Host: chaos', 'Transfer-Encoding: chunked'],
      body,
      eol: '\r\n',
      complete,
      method: 'POST',
    };
  },
  'bad Content-Length': (rng) => ({
    requestLine: 'POST /echo HTTP/1.1',
    headers: ['Host: chaos', `Content-Length: ${pick(rng, ['1e1', '+5', '-5', '5 5', '0x5', 'five', '5,5', '99999999999999999999'])}`],
    body: 'xxxxx',
    eol: '\r\n',
    complete: true,
    method: 'POST',
  }),
  'two Host headers': (rng) => ({
    requestLine: `GET ${pick(rng, PATHS)} HTTP/1.1`,
    headers: ['Host: chaos', `Host: ${pick(rng, ['chaos', 'other', 'evil.example'])}`],
    body: '',
    eol: '\r\n',
    complete: true,
    method: 'GET',
  }),
  'huge headers': (rng) => {
    const variant = int(rng, 0, 2);
    const headers =
      variant === 0
        ? ['Host: chaos', `X-Big: ${'b'.repeat(int(rng, 9000, 70_000))}`]
        : variant === 1
          ? ['Host: chaos', ...Array.from({ length: int(rng, 101, 400) }, (_, i) => `X-H${i}: ${token(rng, 8)}`)]
          : ['Host: chaos', ...Array.from({ length: 40 }, (_, i) => `X-Wide${i}: ${'w'.repeat(4000)}`)];
    return { requestLine: `GET ${pick(rng, PATHS)} HTTP/1.1`, headers, body: '', eol: '\r\n', complete: true, method: 'GET' };
  },
  CONNECT: (rng) => ({
    requestLine: `CONNECT ${pick(rng, ['example.com:443', '127.0.0.1:22', 'chaos:80'])} HTTP/1.1`,
    headers: ['Host: example.com:443'],
    body: rng() < 0.5 ? '' : 'SSH-2.0-chaos\r\n',
    eol: '\r\n',
    complete: true,
    method: 'CONNECT',
  }),
  'upgrade with a body': (rng) => {
    const path = pick(rng, PATHS);
    const full = rng() < 0.4;
    const length = full ? int(rng, 1, 64) : pick(rng, [100_000, int(rng, 100, 5000)]);
    const sent = full ? length : pick(rng, [0, Math.floor(length / 2)]);
    return {
      requestLine: `${pick(rng, ['GET', 'POST'])} ${path} HTTP/1.1`,
      headers: ['Host: chaos', 'Connection: Upgrade', `Upgrade: ${pick(rng, ['foo', 'websocket', 'h2c'])}`, `Content-Length: ${length}`],
      body: 'u'.repeat(sent),
      eol: '\r\n',
      complete: full,
      method: 'GET',
    };
  },
  'bare LF': (rng) => {
    const { parts } = echoRequest(rng);
    return { ...parts, eol: '\n' };
  },
  'bare CR': (rng) => ({
    requestLine: `GET ${pick(rng, PATHS)} HTTP/1.1`,
    headers: ['Host: chaos', 'X-A: one\rtwo'],
    body: '',
    eol: '\r\n',
    complete: true,
    method: 'GET',
  }),
  'NUL bytes': (rng) => {
    const where = int(rng, 0, 2);
    return {
      requestLine: where === 0 ? 'GET /ec\u0000ho HTTP/1.1' : `GET ${pick(rng, PATHS)} HTTP/1.1`,
      headers: ['Host: chaos', ...(where === 1 ? ['X-A: a\u0000b'] : where === 2 ? ['X-\u0000A: b'] : [])],
      body: '',
      eol: '\r\n',
      complete: true,
      method: 'GET',
    };
  },
  'HTTP/1.0 with chunked': () => ({
    requestLine: 'POST /echo HTTP/1.0',
    headers: ['Host: chaos', 'Transfer-Encoding: chunked'],
    body: '3\r\nabc\r\n0\r\n\r\n',
    eol: '\r\n',
    complete: true,
    method: 'POST',
  }),
};

const MUTATION_NAMES = Object.keys(MUTATIONS);

const plain = (requestLine: string, headers: string[], body = '', method = 'GET', complete = true): Parts => ({
  requestLine,
  headers,
  body,
  eol: '\r\n',
  complete,
  method,
});

/** The classic cases, as written in the HTTP smuggling literature, sent first in every run whatever the seed. */
const CORPUS: { name: string; parts: Parts }[] = [
  { name: 'bad request line', parts: plain('GET /echo HTTP/1.1 extra', ['Host: chaos']) },
  { name: 'bad header name', parts: plain('GET /echo HTTP/1.1', ['Host: chaos', 'Bad Header: x']) },
  { name: 'obs-fold', parts: plain('GET /echo HTTP/1.1', ['Host: chaos', 'X-Folded: first\r\n second']) },
  {
    name: 'duplicate Content-Length',
    parts: plain('POST /echo HTTP/1.1', ['Host: chaos', 'Content-Length: 3', 'Content-Length: 4'], 'abcd', 'POST'),
  },
  {
    name: 'Content-Length and Transfer-Encoding',
    parts: plain(
      'POST /echo HTTP/1.1',
      ['Host: chaos', 'Content-Length: 4', 'Transfer-Encoding: chunked'],
      '0\r\n\r\nGET /echo?n=smuggled HTTP/1.1\r\nHost: chaos\r\n\r\n',
      'POST',
    ),
  },
  {
    name: 'bad chunk size',
    parts: plain('POST /echo HTTP/1.1', ['Host: chaos', 'Transfer-Encoding: chunked'], 'zz\r\nabc\r\n0\r\n\r\n', 'POST'),
  },
  { name: 'two Host headers', parts: plain('GET /echo HTTP/1.1', ['Host: chaos', 'Host: other']) },
  { name: 'huge headers', parts: plain('GET /echo HTTP/1.1', ['Host: chaos', `X-Big: ${'b'.repeat(70_000)}`]) },
  { name: 'CONNECT', parts: plain('CONNECT example.com:443 HTTP/1.1', ['Host: example.com:443'], '', 'CONNECT') },
  // A unit that answers without reading the announced body must not leave its connection expecting it.
  {
    name: 'upgrade with a body',
    parts: plain('GET / HTTP/1.1', ['Host: x', 'Connection: Upgrade', 'Upgrade: foo', 'Content-Length: 100000'], '', 'GET', false),
  },
  {
    name: 'upgrade with a body',
    parts: plain('GET /pid HTTP/1.1', ['Host: chaos', 'Connection: Upgrade', 'Upgrade: foo', 'Content-Length: 10'], '0123456789'),
  },
  { name: 'bare LF', parts: { ...plain('GET /echo HTTP/1.1', ['Host: chaos']), eol: '\n' } },
  { name: 'NUL bytes', parts: plain('GET /echo HTTP/1.1', ['Host: chaos', 'X-A: a\u0000b']) },
];

/**
 * The corpus, then `count` cases from `seed`: valid controls, single malformed requests, and pipelines
 * with one broken request in the middle.
 */
export function generateCases(seed: number, count: number): FuzzCase[] {
  const rng = random(seed);
  const cases: FuzzCase[] = CORPUS.map(({ name, parts }, index) => ({
    index,
    name,
    bytes: Buffer.from(serialize(parts), 'latin1'),
    methods: [parts.method],
    complete: parts.complete,
    valid: [],
  }));
  // Pipelines with an upgrade in the middle. The first answer must be the first request's, however slow
  // (a later answer sent ahead of it would pass for it); what follows an upgrade without a body is
  // complete and owed an answer or a close.
  const upgrade = (withBody: boolean) =>
    plain(
      'GET /pid HTTP/1.1',
      ['Host: chaos', 'Connection: Upgrade', 'Upgrade: foo', ...(withBody ? ['Content-Length: 100000'] : [])],
      '',
      'GET',
      !withBody,
    );
  for (const [name, broken] of [
    ['pipelined, upgrade with a body in the middle', upgrade(true)],
    ['pipelined, upgrade in the middle', upgrade(false)],
  ] as const) {
    const before = echoRequest(rng, 'GET', 50);
    const after = echoRequest(rng);
    cases.push({
      index: cases.length,
      name,
      bytes: Buffer.from(serialize(before.parts) + serialize(broken) + serialize(after.parts), 'latin1'),
      methods: [before.parts.method, broken.method, after.parts.method],
      complete: broken.complete,
      valid: [before.expected],
    });
  }
  const total = cases.length + count;
  for (let index = cases.length; index < total; index++) {
    const roll = rng();
    if (roll < 0.1) {
      const { parts, expected } = echoRequest(rng);
      cases.push({
        index,
        name: 'valid request',
        bytes: Buffer.from(serialize(parts), 'latin1'),
        methods: [parts.method],
        complete: true,
        valid: [expected],
      });
    } else if (roll < 0.3) {
      const name = pick(rng, MUTATION_NAMES);
      const broken = MUTATIONS[name]!(rng);
      const before = echoRequest(rng);
      const after = echoRequest(rng);
      cases.push({
        index,
        name: `pipelined, ${name} in the middle`,
        bytes: Buffer.from(serialize(before.parts) + serialize(broken) + serialize(after.parts), 'latin1'),
        methods: [before.parts.method, broken.method, after.parts.method],
        complete: broken.complete,
        valid: [before.expected],
      });
    } else {
      // Every kind of mutation in turn, so a short run covers them all.
      const name = MUTATION_NAMES[index % MUTATION_NAMES.length]!;
      const parts = MUTATIONS[name]!(rng);
      cases.push({
        index,
        name,
        bytes: Buffer.from(serialize(parts), 'latin1'),
        methods: [parts.method],
        complete: parts.complete,
        valid: [],
      });
    }
  }
  return cases;
}

export interface CaseVerdict {
  /** What was wrong, or empty. */
  problems: string[];
  /** A malformed request answered 2xx: not a failure, but worth a look. */
  acceptedMalformed: boolean;
  requests: number;
}

const HANG_MS = 3000;
const INCOMPLETE_WAIT_MS = 500;
const FOLLOW_UP_MS = 2000;
/** New clients after each case: enough for the next requests to reach every unit's pooled connections. */
const FOLLOW_UPS = 3;

/** Runs one case and the clean requests that follow it. */
export async function runCase(port: number, fuzz: FuzzCase, nonceSeed: string): Promise<CaseVerdict> {
  const problems: string[] = [];
  const result = await rawExchange(port, fuzz.bytes, {
    methods: fuzz.methods,
    expect: fuzz.methods.length,
    timeoutMs: fuzz.complete ? HANG_MS : INCOMPLETE_WAIT_MS,
  });
  problems.push(...judgeCase(fuzz, result));
  // An upgrade with a body is well-formed HTTP: a 2xx to it (the switch declined) says nothing.
  const brokenAnswer =
    fuzz.valid.length < fuzz.methods.length && !fuzz.name.includes('upgrade') ? result.responses[fuzz.valid.length] : undefined;
  const acceptedMalformed = brokenAnswer !== undefined && brokenAnswer.status < 300;
  for (let i = 0; i < FOLLOW_UPS; i++) {
    const problem = await followUp(port, `${nonceSeed}x${i}`);
    if (problem) problems.push(`the next client (${i + 1} of ${FOLLOW_UPS}): ${problem}`);
  }
  return { problems, acceptedMalformed, requests: 1 + FOLLOW_UPS };
}

function judgeCase(fuzz: FuzzCase, result: RawResult): string[] {
  const problems: string[] = [];
  if (result.malformed) problems.push(`unparseable answer: ${result.malformed}`);
  for (const response of result.responses) {
    if (response.status >= 500)
      problems.push(`answered ${response.status} ${response.reason}${header(response, 'x-worker-pid') ? ' (from the app)' : ''}`);
  }
  const standalone = fuzz.valid.length === fuzz.methods.length;
  fuzz.valid.forEach((valid, i) => {
    const response = result.responses[i];
    if (!response) {
      // Before a broken request, a valid one's answer may be lost with the connection the broken one closes.
      if (standalone) problems.push(`valid request ${i + 1} got no answer`);
      return;
    }
    if (!standalone && response.status >= 300) return; // the answer to the broken request: the earlier one's was lost
    const problem = echoProblem(response.status, response.body.toString('latin1'), valid);
    if (problem) problems.push(`valid request ${i + 1}: ${problem}`);
  });
  const owed = result.responses.length < fuzz.methods.length && !result.responses.some((response) => response.status >= 400);
  if (fuzz.complete && result.timedOut && result.end === null && owed) {
    problems.push(`no answer and no close within ${HANG_MS} ms (${result.responses.length} of ${fuzz.methods.length} answered)`);
  }
  return problems;
}

/** A well-formed request on a new connection: it must get exactly its own echo, promptly. */
async function followUp(port: number, nonce: string): Promise<string | null> {
  const expected: Echo = { url: `/echo?n=${nonce}`, nonce, method: 'POST', body: `body-${nonce}` };
  const request = `POST ${expected.url} HTTP/1.1\r\nHost: chaos\r\nx-chaos-nonce: ${nonce}\r\nContent-Length: ${expected.body.length}\r\n\r\n${expected.body}`;
  const result = await rawExchange(port, Buffer.from(request, 'latin1'), { methods: ['POST'], expect: 1, timeoutMs: FOLLOW_UP_MS });
  const [response] = result.responses;
  if (!response) return result.timedOut ? `no answer within ${FOLLOW_UP_MS} ms` : `connection ${result.end ?? 'ended'} with no answer`;
  if (!header(response, 'x-worker-pid')) return `answered ${response.status} not by the app`;
  return echoProblem(response.status, response.body.toString('latin1'), expected);
}

/** Why an answer is not the echo of this very request, or null. */
function echoProblem(status: number, text: string, expected: Echo): string | null {
  if (status !== 200) return `answered ${status}: ${JSON.stringify(text.slice(0, 120))}`;
  let echo: { method?: string; url?: string; headers?: Record<string, string>; body?: string };
  try {
    echo = JSON.parse(text) as typeof echo;
  } catch {
    return `got an answer that is not its echo: ${JSON.stringify(text.slice(0, 120))}`;
  }
  if (typeof echo !== 'object' || echo === null) return `got an answer that is not its echo: ${JSON.stringify(text.slice(0, 120))}`;
  if (echo.url !== expected.url || echo.headers?.['x-chaos-nonce'] !== expected.nonce) {
    return `got the answer to another request (${echo.method} ${echo.url})`;
  }
  if (echo.method !== expected.method || echo.body !== expected.body)
    return `its request arrived altered: ${echo.method} with body ${JSON.stringify(echo.body?.slice(0, 120))}`;
  const foreign = Object.keys(echo.headers ?? {}).filter((name) => name === 'x-forkgate-peer' || name === 'upgrade');
  if (foreign.length > 0) return `its request arrived with ${foreign.join(', ')}`;
  return null;
}
