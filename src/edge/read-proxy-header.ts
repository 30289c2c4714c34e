// Reads the PROXY header (edge/proxy-protocol.ts parses it) off a connection before its HTTP bytes.
import type { Socket } from 'node:net';
import type { ProxyProtocolMode } from '../config/settings.ts';
import { parseProxyHeader, type ProxiedPeer } from './proxy-protocol.ts';

export interface ProxyHeaderPolicy {
  readonly mode: Exclude<ProxyProtocolMode, 'off'>;
  /** Whether this peer may send a header at all; one that may must, unless the mode is auto. */
  readonly allowed: boolean;
  /** 0: wait as long as the client likes. */
  readonly timeoutMs: number;
}

/**
 * Reads the PROXY header off a new connection before anything else sees its bytes. On success the bytes
 * after the header are put back, the socket is left paused for its next reader, and `onHeader` gets the
 * client the header names (null: the connection is its own client). A connection that breaks the policy
 * is destroyed and `onRefused` says why.
 */
export function readProxyHeader(
  socket: Socket,
  policy: ProxyHeaderPolicy,
  onHeader: (source: ProxiedPeer | null) => void,
  onRefused: (reason: string) => void,
): void {
  let received: Buffer = Buffer.alloc(0);
  const timer =
    policy.timeoutMs > 0 ? setTimeout(() => refuse('no complete PROXY header within --headers-timeout'), policy.timeoutMs) : null;
  const stopReading = () => {
    if (timer) clearTimeout(timer);
    socket.off('data', onData);
    socket.off('error', stopReading); // the socket destroys itself on an error; 'close' follows
    socket.off('close', stopReading);
  };
  const refuse = (reason: string) => {
    stopReading();
    socket.destroy();
    onRefused(reason);
  };
  const accept = (rest: Buffer, source: ProxiedPeer | null) => {
    stopReading();
    socket.pause();
    if (rest.length > 0) socket.unshift(rest);
    onHeader(source);
  };
  const onData = (chunk: Buffer) => {
    received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
    const header = parseProxyHeader(received);
    switch (header.state) {
      case 'incomplete':
        return;
      case 'invalid':
        return refuse(`invalid PROXY header: ${header.reason}`);
      case 'absent':
        if (policy.allowed && policy.mode !== 'auto') return refuse(`no PROXY header (--proxy-protocol ${policy.mode})`);
        return accept(received, null);
      case 'parsed':
        if (!policy.allowed) return refuse('a PROXY header from a peer not in --proxy-allow-from');
        if (policy.mode !== 'auto' && policy.mode !== `v${header.version}`) {
          return refuse(`a PROXY v${header.version} header (--proxy-protocol ${policy.mode})`);
        }
        return accept(received.subarray(header.length), header.source);
    }
  };
  socket.on('data', onData);
  socket.on('error', stopReading);
  socket.on('close', stopReading);
}
