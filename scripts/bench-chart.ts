// Draws docs/concurrency.svg from a bench run (bench/results/latest.json): for each workload, every
// server's throughput relative to N plain reuseport processes, and its CPU time per request; for a paced
// workload, whose req/s is the load's, every server's p99 relative to cluster's.
import { readFileSync, writeFileSync } from 'node:fs';

interface Row {
  workload: string;
  server: string;
  reqPerSec: number;
  cpuUsPerReq: number;
  p99Ms: number;
  vsPlain?: { reqPerSec: number };
  paceMs?: number;
  error?: string;
}

const input = process.argv[2] ?? 'bench/results/latest.json';
const output = process.argv[3] ?? 'docs/concurrency.svg';
const { meta, rows } = JSON.parse(readFileSync(input, 'utf8')) as { meta: { date: string; node: string; nproc: number }; rows: Row[] };
const measured = rows.filter((row) => !row.error && row.vsPlain);

const ROW = 18;
const LABEL = 300;
const BAR = 360;
const MAX_RATIO = 1.4;
const escapeXml = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;');
const parts: string[] = [];
let y = 40;
for (const workload of [...new Set(measured.map((row) => row.workload))]) {
  const section = measured.filter((candidate) => candidate.workload === workload);
  const paced = section[0]!.paceMs !== undefined;
  const reference = section.find((row) => row.server === 'cluster');
  const heading = paced ? `${workload}: paced load, p99 relative to cluster (shorter is better)` : workload;
  parts.push(`<text x="10" y="${y + 12}" font-weight="bold">${escapeXml(heading)}</text>`);
  y += ROW + 4;
  for (const row of section) {
    const ratio = paced ? row.p99Ms / (reference?.p99Ms ?? Number.NaN) : row.vsPlain!.reqPerSec;
    const width = Math.max(1, (Math.min(ratio, MAX_RATIO) / MAX_RATIO) * BAR);
    const colour = row.server.startsWith('forkgate') ? '#2b6cb0' : '#a0aec0';
    parts.push(
      `<text x="${LABEL - 6}" y="${y + 12}" text-anchor="end">${escapeXml(row.server)}</text>`,
      `<rect x="${LABEL}" y="${y + 2}" width="${width.toFixed(1)}" height="${ROW - 6}" fill="${colour}"/>`,
      `<text x="${LABEL + width + 6}" y="${y + 12}">${ratio.toFixed(2)} × · ${Math.round(row.reqPerSec).toLocaleString('en')} req/s · ${row.cpuUsPerReq.toFixed(0)} µs/req · p99 ${row.p99Ms.toFixed(1)} ms</text>`,
    );
    y += ROW;
  }
  y += 8;
}
const plainX = LABEL + BAR / MAX_RATIO;
const height = y + 10;
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">req/s relative to N plain reuseport processes, p99 to cluster's (1.0 = the line) — ${escapeXml(meta.node)}, ${meta.nproc} CPUs, ${escapeXml(meta.date.slice(0, 10))}</text>
<line x1="${plainX}" y1="30" x2="${plainX}" y2="${height - 10}" stroke="#e53e3e" stroke-dasharray="4 3"/>
${parts.join('\n')}
</svg>
`;
writeFileSync(output, svg);
