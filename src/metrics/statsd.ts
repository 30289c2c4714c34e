/**
 * --statsd-host: Gunicorn's statsd metrics, under Gunicorn's names, over UDP. Counts are added up and
 * sent once a second in one datagram per few hundred bytes, so a request costs no system call; each
 * second's durations are a bounded sample (statsd's `|@rate` scales them back), so a busy unit sends no
 * more than a quiet one. A send that fails is dropped: nothing ever waits on the statsd server.
 */
import * as dgram from 'node:dgram';
import * as dns from 'node:dns';
import { isIPv6 } from 'node:net';
import type { Settings, TcpAddress } from '../config/settings.ts';
import { observeLogs } from '../log/logger.ts';

const FLUSH_MS = 1000;
/** Request durations sent per second at most, per unit. */
const DURATION_SAMPLES = 64;
/** Keeps a datagram within an Ethernet frame. */
const MAX_DATAGRAM = 1400;

export class Statsd {
  private readonly socket: dgram.Socket;
  private readonly address: TcpAddress;
  private readonly prefix: string;
  /** '|#tag,tag' (DogStatsD), or ''. */
  private readonly tags: string;
  private readonly counts = new Map<string, number>();
  private readonly gauges = new Map<string, number>();
  private durations: number[] = [];
  private durationsSeen = 0;
  private readonly samplers: (() => void)[] = [];
  private readonly family: 4 | 6;
  /** The host's address once looked up; null while its name does not resolve. */
  private resolved: string | null = null;
  private lookingUp = false;
  private told = false;
  private tellUnreachable: ((reason: string) => void) | null = null;

  constructor(address: TcpAddress, prefix: string, tags: string) {
    this.address = address;
    this.prefix = prefix === '' || prefix.endsWith('.') ? prefix : `${prefix}.`;
    this.tags = tags === '' ? '' : `|#${tags}`;
    this.family = isIPv6(address.host) ? 6 : 4;
    this.socket = dgram.createSocket(this.family === 6 ? 'udp6' : 'udp4');
    this.socket.on('error', () => {}); // the statsd server's absence is not ours to report
    this.socket.unref();
    this.lookUp();
    setInterval(() => this.flush(), FLUSH_MS).unref();
  }

  /** Told once when the statsd host's name does not resolve (again once it resolved and then did not). */
  whenUnreachable(tell: (reason: string) => void): void {
    this.tellUnreachable = tell;
  }

  /** The host's address, looked up once, as Gunicorn's client does, not for every datagram. */
  private lookUp(): void {
    if (this.lookingUp) return;
    this.lookingUp = true;
    dns.lookup(this.address.host, { family: this.family }, (error, address) => {
      this.lookingUp = false;
      if (!error) {
        this.resolved = address;
        this.told = false;
        return;
      }
      if (this.told) return;
      this.told = true;
      this.tellUnreachable?.(error.code ?? error.message);
    });
  }

  /** Runs before each flush, to set gauges. */
  beforeFlush(sample: () => void): void {
    this.samplers.push(sample);
  }

  increment(name: string, by = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + by);
  }

  gauge(name: string, value: number): void {
    this.gauges.set(name, value);
  }

  /** A request's duration, in milliseconds (Gunicorn's unit); a uniform sample of each second's is kept. */
  timing(milliseconds: number): void {
    const seen = ++this.durationsSeen;
    if (this.durations.length < DURATION_SAMPLES) this.durations.push(milliseconds);
    else {
      const slot = Math.floor(Math.random() * seen);
      if (slot < DURATION_SAMPLES) this.durations[slot] = milliseconds;
    }
  }

  private flush(): void {
    for (const sample of this.samplers) sample();
    const lines: string[] = [];
    const { prefix, tags } = this;
    for (const [name, value] of this.counts) lines.push(`${prefix}${name}:${value}|c${tags}`);
    for (const [name, value] of this.gauges) lines.push(`${prefix}${name}:${value}|g${tags}`);
    const rate = this.durationsSeen > 0 ? this.durations.length / this.durationsSeen : 1;
    const sampled = rate < 1 ? `|@${rate.toFixed(4)}` : '';
    for (const ms of this.durations) lines.push(`${prefix}gunicorn.request.duration:${ms.toFixed(3)}|ms${sampled}${tags}`);
    this.counts.clear();
    this.gauges.clear();
    this.durations = [];
    this.durationsSeen = 0;
    let datagram = '';
    for (const line of lines) {
      if (datagram && datagram.length + line.length + 1 > MAX_DATAGRAM) {
        this.send(datagram);
        datagram = '';
      }
      datagram = datagram ? `${datagram}\n${line}` : line;
    }
    if (datagram) this.send(datagram);
  }

  private send(datagram: string): void {
    if (this.resolved) this.socket.send(datagram, this.address.port, this.resolved, () => {});
    else this.lookUp(); // dropped meanwhile
  }
}

/** Reports each request as Gunicorn's workers do: gunicorn.requests, .request.duration, .request.status.NNN. */
export function statsdRequestObserver(statsd: Statsd): (method: string, status: number, seconds: number) => void {
  const statusNames: string[] = [];
  return (_method, status, seconds) => {
    statsd.increment('gunicorn.requests');
    statusNames[status] ??= `gunicorn.request.status.${status}`;
    statsd.increment(statusNames[status]);
    statsd.timing(seconds * 1000);
  };
}

let client: Statsd | null = null;

/** This process's (or thread's) statsd client, which also counts its log messages (gunicorn.log.LEVEL). */
export function statsdFor(settings: Pick<Settings, 'statsdHost' | 'statsdPrefix' | 'dogstatsdTags'>): Statsd | null {
  if (!settings.statsdHost) return null;
  if (!client) {
    client = new Statsd(settings.statsdHost, settings.statsdPrefix, settings.dogstatsdTags);
    const statsd = client;
    observeLogs((level, withError) => statsd.increment(`gunicorn.log.${level === 'error' && withError ? 'exception' : level}`));
  }
  return client;
}
