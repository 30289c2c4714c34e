/**
 * The bench's paced load: CONNECTIONS keep-alive connections, each sending GET /, waiting for the whole
 * response, then waiting PACE ms before the next request, for SECONDS. A closed loop with a pause, well
 * below capacity, so latency shows where requests were sent rather than the queue of a saturated server.
 *
 *   node scripts/paced-load.ts PORT CONNECTIONS PACE_MS SECONDS
 *
 * wrk cannot pause between requests on a connection, and autocannon's connectionRate sends up to its rate
 * back to back at the start of each second. Percentiles are exact, from every sample sorted. Prints one
 * line, `BENCH_JSON {...}`, with the fields wrk's report script prints for the bench. Runs as a process of
 * its own so that its CPU is never counted as the server's.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpConnection } from './chaos/http-client.ts';

const TIMEOUT_MS = 5000;

const [port, connections, paceMs, seconds] = process.argv.slice(2).map(Number);
if (![port, connections, paceMs, seconds].every((value) => Number.isInteger(value) && value! > 0)) {
  console.error('usage: node scripts/paced-load.ts PORT CONNECTIONS PACE_MS SECONDS');
  process.exit(2);
}

const request = `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;
const latenciesMs: number[] = [];
let non2xx = 0;
let socketErrors = 0;

async function loop(connection: HttpConnection, startDelayMs: number, deadline: number): Promise<void> {
  await sleep(startDelayMs);
  while (performance.now() < deadline) {
    if (!connection.open) connection = new HttpConnection(port!);
    const sent = performance.now();
    const outcome = await connection.request(request, 'GET', TIMEOUT_MS);
    if (outcome.response) {
      latenciesMs.push(performance.now() - sent);
      if (outcome.response.status < 200 || outcome.response.status > 299) non2xx++;
    } else socketErrors++;
    await sleep(paceMs);
  }
  connection.close();
}

const opened = Array.from({ length: connections! }, () => new HttpConnection(port!));
if (!(await Promise.all(opened.map((connection) => connection.connected()))).every(Boolean)) {
  console.error(`paced-load: cannot connect to 127.0.0.1:${port}`);
  process.exit(1);
}
const started = performance.now();
// Starts spread over one pace, so the connections do not send in step.
await Promise.all(opened.map((connection, index) => loop(connection, (index * paceMs!) / connections!, started + seconds! * 1000)));
const durationMs = performance.now() - started;

const sorted = Float64Array.from(latenciesMs).sort();
/** Nearest rank: the smallest sample with at least `percent` % of the samples at or below it. */
const percentileUs = (percent: number) => (sorted.length === 0 ? 0 : sorted[Math.ceil((percent / 100) * sorted.length) - 1]! * 1000);
const result = {
  requests: sorted.length,
  durationUs: Math.round(durationMs * 1000),
  p50Us: percentileUs(50),
  p99Us: percentileUs(99),
  p999Us: percentileUs(99.9),
  non2xx,
  socketErrors,
};
console.log(`BENCH_JSON ${JSON.stringify(result)}`);
