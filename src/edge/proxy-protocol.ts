/**
 * The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a TCP load balancer such as AWS NLB
 * or nginx's stream module puts before the client's bytes to say who the client is. Pure parsing here;
 * edge/connection.ts reads it off the socket.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** The client the proxy speaks for, as req.socket.remoteAddress/-Port/-Family will report it. */
export interface ProxiedPeer {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

export type ProxyHeader =
  /** The bytes so far may still become a header: read more. */
  | { readonly state: 'incomplete' }
  /** The connection does not start with a PROXY header. */
  | { readonly state: 'absent' }
  | { readonly state: 'invalid'; readonly reason: string }
  /**
   * `length` bytes are the header; the rest belongs to the connection. `source` is null when the header
   * names no TCP client (v1 UNKNOWN, v2 LOCAL such as a balancer's health check, other families): the
   * connection's own peer stands.
   */
  | { readonly state: 'parsed'; readonly version: 1 | 2; readonly length: number; readonly source: ProxiedPeer | null };

const V1_PREFIX = Buffer.from('PROXY ');
/** "PROXY TCP6 <39> <39> 65535 65535\r\n": the spec's bound on a v1 line, CRLF included. */
const V1_MAX_LENGTH = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_FIXED_LENGTH = 16;

export function parseProxyHeader(data: Buffer): ProxyHeader {
  if (startsWith(data, V1_PREFIX)) return data.length < V1_PREFIX.length ? { state: 'incomplete' } : parseV1(data);
  if (startsWith(data, V2_SIGNATURE)) return data.length < V2_FIXED_LENGTH ? { state: 'incomplete' } : parseV2(data);
  return { state: 'absent' };
}

/** Whether data and prefix agree on their common length (so a short data may still grow into prefix). */
function startsWith(data: Buffer, prefix: Buffer): boolean {
  const length = Math.min(data.length, prefix.length);
  return data.subarray(0, length).equals(prefix.subarray(0, length));
}

function parseV1(data: Buffer): ProxyHeader {
  const end = data.subarray(0, V1_MAX_LENGTH).indexOf('\r\n');
  if (end === -1) {
    return data.length >= V1_MAX_LENGTH ? invalid(`v1 line longer than ${V1_MAX_LENGTH} bytes`) : { state: 'incomplete' };
  }
  const length = end + 2;
  const [, protocol, source, , sourcePort, destinationPort, ...extra] = data.toString('latin1', 0, end).split(' ');
  if (protocol === 'UNKNOWN') return { state: 'parsed', version: 1, length, source: null };
  const family = protocol === 'TCP4' ? 'IPv4' : protocol === 'TCP6' ? 'IPv6' : null;
  if (!family) return invalid(`v1 protocol ${JSON.stringify(protocol)} is not TCP4, TCP6 or UNKNOWN`);
  if (extra.length > 0 || destinationPort === undefined) return invalid('v1 line is not "PROXY TCPn SRC DST SPORT DPORT"');
  if (!(family === 'IPv4' ? isIPv4 : isIPv6)(source!)) return invalid(`v1 source ${JSON.stringify(source)} is not an ${family} address`);
  const port = portNumber(sourcePort!);
  if (port === null || portNumber(destinationPort) === null) return invalid('v1 port is not a number from 0 to 65535');
  return { state: 'parsed', version: 1, length, source: { address: source!, port, family } };
}

function portNumber(text: string): number | null {
  return /^(0|[1-9]\d{0,4})$/.test(text) && Number(text) <= 65535 ? Number(text) : null;
}

const COMMAND_LOCAL = 0x0;
const COMMAND_PROXY = 0x1;
const FAMILY_INET = 0x1;
const FAMILY_INET6 = 0x2;
const TRANSPORT_STREAM = 0x1;

function parseV2(data: Buffer): ProxyHeader {
  const versionCommand = data[12]!;
  if (versionCommand >> 4 !== 2) return invalid(`v2 version ${versionCommand >> 4} is not 2`);
  const command = versionCommand & 0x0f;
  if (command !== COMMAND_LOCAL && command !== COMMAND_PROXY) return invalid(`v2 command ${command} is neither LOCAL nor PROXY`);
  const family = data[13]! >> 4;
  const transport = data[13]! & 0x0f;
  // The addresses and any TLVs (which forkgate skips: AWS and others add their own) follow.
  const length = V2_FIXED_LENGTH + data.readUInt16BE(14);
  if (data.length < length) return { state: 'incomplete' };
  const body = data.subarray(V2_FIXED_LENGTH, length);
  if (command === COMMAND_LOCAL || transport !== TRANSPORT_STREAM) return { state: 'parsed', version: 2, length, source: null };
  if (family === FAMILY_INET) {
    if (body.length < 12) return invalid('v2 IPv4 address block shorter than 12 bytes');
    return {
      state: 'parsed',
      version: 2,
      length,
      source: { address: body.subarray(0, 4).join('.'), port: body.readUInt16BE(8), family: 'IPv4' },
    };
  }
  if (family === FAMILY_INET6) {
    if (body.length < 36) return invalid('v2 IPv6 address block shorter than 36 bytes');
    return {
      state: 'parsed',
      version: 2,
      length,
      source: { address: formatIPv6(body.subarray(0, 16)), port: body.readUInt16BE(32), family: 'IPv6' },
    };
  }
  return { state: 'parsed', version: 2, length, source: null }; // UNSPEC or a unix socket: no TCP client to name
}

/** RFC 5952 text, as Node reports IPv6 peers: lower case, the longest run of zero groups as "::". */
export function formatIPv6(bytes: Buffer): string {
  if (bytes.subarray(0, 10).every((byte) => byte === 0) && bytes.readUInt16BE(10) === 0xffff) {
    return `::ffff:${bytes.subarray(12).join('.')}`;
  }
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2));
  let runStart = -1;
  let runLength = 0;
  for (let i = 0; i < 8; i++) {
    let end = i;
    while (end < 8 && groups[end] === 0) end++;
    if (end - i > runLength && end - i > 1) [runStart, runLength] = [i, end - i];
  }
  const hex = groups.map((group) => group.toString(16));
  if (runStart === -1) return hex.join(':');
  return `${hex.slice(0, runStart).join(':')}::${hex.slice(runStart + runLength).join(':')}`;
}

function invalid(reason: string): ProxyHeader {
  return { state: 'invalid', reason };
}
