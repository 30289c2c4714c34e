/**
 * The admin endpoint's live dashboard: GET / is one self-contained page (no CDN: production hosts often
 * have no internet), GET /events a server-sent event stream of the pool, one snapshot a second, collected
 * only while a page is open. The page derives the request rate and p50/p99 from consecutive snapshots.
 */
import type * as http from 'node:http';
import { quantileMs } from './quantile.ts';
import { DURATION_BUCKETS } from './report.ts';
import type { PoolSnapshot } from './pool-metrics.ts';

const INTERVAL_MS = 1000;

export function sendDashboard(res: http.ServerResponse): void {
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    // The page runs its own inline script and talks to this endpoint alone.
    'content-security-policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
  });
  res.end(PAGE);
}

export function streamSnapshots(req: http.IncomingMessage, res: http.ServerResponse, snapshot: () => Promise<PoolSnapshot>): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  let timer: NodeJS.Timeout | null = null;
  const send = () => {
    snapshot().then(
      (pool) => {
        if (res.destroyed) return;
        res.write(`data: ${JSON.stringify(pool)}\n\n`);
        timer = setTimeout(send, INTERVAL_MS);
      },
      () => {
        if (!res.destroyed) timer = setTimeout(send, INTERVAL_MS);
      },
    );
  };
  req.socket.setTimeout(0);
  res.on('close', () => timer && clearTimeout(timer));
  send();
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>forkgate</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .5em; }
  h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }
  table { border-collapse: collapse; }
  th, td { padding: .25em .8em; text-align: right; border-bottom: 1px solid #ddd; }
  th:first-child, td:first-child, td.state { text-align: left; }
  .charts { display: flex; gap: 2em; flex-wrap: wrap; }
  svg { background: #f7f7f7; border: 1px solid #ddd; }
  .legend span { margin-right: 1em; }
  #status { color: #666; }
  .ready { color: #176f2c; } .booting { color: #8a6d00; } .retiring, .draining { color: #8a3c00; }
</style>
</head>
<body>
<h1>forkgate <span id="status">connecting…</span></h1>
<div class="charts">
  <div><h2>Requests per second</h2><svg id="rate" width="480" height="140"></svg></div>
  <div><h2>Latency (ms)</h2><svg id="latency" width="480" height="140"></svg>
    <div class="legend"><span style="color:#1f5fbf">p50</span><span style="color:#c0392b">p99</span></div></div>
</div>
<h2>Workers <span id="pool"></span></h2>
<table><thead><tr><th>slot</th><th>pid</th><th>state</th><th>requests</th><th>RSS MiB</th><th>CPU %</th><th>event loop %</th><th>age</th></tr></thead>
<tbody id="workers"></tbody></table>
<h2>Restarts</h2>
<table><thead><tr><th>time</th><th>slot</th><th>pid</th><th>reason</th></tr></thead><tbody id="restarts"></tbody></table>
<script>
const BUCKETS = ${JSON.stringify(DURATION_BUCKETS)};
const KEEP = 300;
const history = [];
let previous = null;
const cpuBefore = new Map();

const quantileMs = ${quantileMs.toString()};

function chart(svg, series) {
  const width = svg.width.baseVal.value, height = svg.height.baseVal.value;
  const max = Math.max(1, ...series.flatMap((s) => s.points.filter((v) => v !== null)));
  svg.replaceChildren();
  const ns = 'http://www.w3.org/2000/svg';
  const label = document.createElementNS(ns, 'text');
  label.setAttribute('x', 4); label.setAttribute('y', 14); label.setAttribute('font-size', 11);
  label.textContent = max.toFixed(max < 10 ? 1 : 0);
  svg.append(label);
  for (const { points, color } of series) {
    const path = points.map((v, i) => v === null ? null : (i * width / (KEEP - 1)).toFixed(1) + ',' + (height - 4 - v / max * (height - 20)).toFixed(1)).filter(Boolean);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', path.join(' '));
    line.setAttribute('fill', 'none'); line.setAttribute('stroke', color); line.setAttribute('stroke-width', 1.5);
    svg.append(line);
  }
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function age(seconds) {
  return seconds < 60 ? Math.round(seconds) + ' s' : seconds < 3600 ? Math.round(seconds / 60) + ' min' : (seconds / 3600).toFixed(1) + ' h';
}

function show(pool) {
  if (previous) {
    const seconds = (pool.at - previous.at) / 1000;
    const delta = pool.durationBuckets.map((n, i) => n - previous.durationBuckets[i]);
    history.push({ rate: (pool.requests - previous.requests) / seconds, p50: quantileMs(BUCKETS, delta, 0.5), p99: quantileMs(BUCKETS, delta, 0.99) });
    if (history.length > KEEP) history.shift();
  }
  const pad = (values) => Array(KEEP - values.length).fill(null).concat(values);
  chart(document.getElementById('rate'), [{ points: pad(history.map((h) => h.rate)), color: '#176f2c' }]);
  chart(document.getElementById('latency'), [
    { points: pad(history.map((h) => h.p50)), color: '#1f5fbf' },
    { points: pad(history.map((h) => h.p99)), color: '#c0392b' },
  ]);
  document.getElementById('pool').textContent = '(' + pool.workers.length + ' of ' + pool.target + ' wanted; queued: ' + pool.queued + ')';
  const rows = pool.workers.map((w) => {
    const before = cpuBefore.get(w.pid);
    const cpu = before && previous ? (w.cpuSeconds - before) / ((pool.at - previous.at) / 1000) * 100 : null;
    cpuBefore.set(w.pid, w.cpuSeconds);
    const tr = document.createElement('tr');
    tr.dataset.pid = w.pid;
    tr.append(cell(w.slot), cell(w.pid), cell(w.state, 'state ' + w.state), cell(w.requests.toLocaleString()),
      cell((w.rssBytes / 1048576).toFixed(0)), cell(cpu === null ? '' : cpu.toFixed(0)),
      cell((w.eventLoopUtilization * 100).toFixed(0)), cell(age(w.uptimeSeconds)));
    return tr;
  });
  document.getElementById('workers').replaceChildren(...rows);
  document.getElementById('restarts').replaceChildren(...pool.restarts.slice().reverse().map((r) => {
    const tr = document.createElement('tr');
    tr.append(cell(new Date(r.at).toLocaleTimeString()), cell(r.slot), cell(r.pid), cell(r.reason));
    return tr;
  }));
  document.getElementById('status').textContent = pool.requests.toLocaleString() + ' requests since start';
  previous = pool;
}

const events = new EventSource('events');
events.onmessage = (event) => show(JSON.parse(event.data));
events.onerror = () => { document.getElementById('status').textContent = 'reconnecting…'; };
</script>
</body>
</html>
`;
