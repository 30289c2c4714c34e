/** tune's result as a terminal table, as JSON, and as one self-contained HTML page with SVG charts. */
import { configFlags, configSnippet, connections, describeConfig, units, type Trial } from './model.ts';
import type { TuneResult } from './run.ts';
import { tableLines } from '../commands/table.ts';

const fixed = (value: number | null, digits: number) => (value === null ? '' : value.toFixed(digits));
const whole = (value: number | null) => (value === null ? '' : String(Math.round(value)));

/** The recommendation as a command line. */
export function commandLine(result: TuneResult): string | null {
  return result.recommendation ? `forkgate ${[...configFlags(result.recommendation), result.app].join(' ')}` : null;
}

export function renderText(result: TuneResult): string {
  const { profile, machine } = result;
  const lines = [
    `forkgate tune ${result.app}: ${machine.cpus} CPUs, ${Math.round(machine.memoryMiB)} MiB (${machine.memorySource})`,
    ...result.paths
      .filter((check) => !good(check.status))
      .map((check) => `path ${check.path} answered ${check.status ?? check.error}: left out of the load`),
    `profile (1 worker): ${fixed(profile.cpuMs, 2)} ms CPU per ${fixed(profile.requestMs, 2)} ms request, ` +
      `${Math.round(profile.saturationReqPerSec)} req/s at ${connections(profile.saturationConnections)} (event loop ${Math.round(profile.loopUtilization * 100)} % busy); ` +
      `master ${whole(profile.masterMiB)} MiB, worker process ${whole(profile.processMiB)} MiB, serving thread ${whole(profile.threadMiB)} MiB`,
    `bottleneck: ${result.bottleneck}`,
    '',
    `trials: ${result.connections} connections, ${result.durationSeconds} s each`,
    table(result.trials, result.recommendation),
    '',
  ];
  if (result.recommendation) {
    lines.push(
      `recommended: ${commandLine(result)}`,
      '',
      ...result.reasons.map((reason) => `  ${reason}`),
      '',
      'forkgate.config.ts:',
      '',
      configSnippet(result.recommendation),
    );
  } else {
    lines.push('no recommendation', '', ...result.reasons.map((reason) => `  ${reason}`), '');
  }
  return lines.join('\n');
}

function good(status: number | null): boolean {
  return status !== null && status >= 200 && status < 400;
}

/** A trial's configuration and figures, as both reports show them: config, units, req/s, p50, p99, RSS, CPU. */
function measuredCells(trial: Trial): string[] {
  return [
    describeConfig(trial),
    String(units(trial)),
    whole(trial.reqPerSec),
    fixed(trial.p50Ms, 2),
    fixed(trial.p99Ms, 2),
    whole(trial.rssMiB),
    whole(trial.cpuUsPerReq),
  ];
}

function table(trials: readonly Trial[], chosen: Trial | null): string {
  const header = ['', 'CONFIG', 'UNITS', 'REQ/S', 'P50 MS', 'P99 MS', 'RSS MiB', 'CPU µs/REQ', 'FAILED', ''];
  const rows = trials.map((trial) => [
    trial === chosen ? '*' : '',
    ...measuredCells(trial),
    trial.skipped === null ? String(trial.failures) : '',
    trial.skipped === null ? '' : `skipped: ${trial.skipped}`,
  ]);
  return tableLines(header, rows).join('\n');
}

/** The --json document: the profile, every trial, the bottleneck and the recommendation (a trial's keys). */
export function renderJson(result: TuneResult): string {
  const { generatorCpus, ...rest } = result;
  return `${JSON.stringify({ ...rest, generator: { peakCpus: generatorCpus }, command: commandLine(result) }, null, 2)}\n`;
}

// ---------------------------------------------------------------- HTML

const CLASS_COLORS: Record<string, string> = {
  'async processes': '#1f6feb',
  'gthread threads': '#d97706',
  'sync processes': '#6b7280',
  'async proxy': '#059669',
  'async reuseport': '#7c3aed',
};

/** Which line of a chart a trial belongs to. */
function series(trial: Trial): string {
  if (trial.threads > 1 || trial.workerClass === 'gthread') return 'gthread threads';
  if (trial.workerClass === 'sync') return 'sync processes';
  if (trial.balance !== 'round-robin') return `async ${trial.balance}`;
  return 'async processes';
}

interface Point {
  x: number;
  y: number;
  label: string;
  series: string;
  chosen: boolean;
}

interface ChartOptions {
  /** A horizontal line, such as the memory allowed. */
  limit?: { y: number; label: string };
  /** x on a log scale (connections rising by a factor). */
  logX?: boolean;
}

/** A scatter-and-line chart: one point per trial, lines joining each series by x. Inline SVG, no scripts. */
function chart(title: string, xLabel: string, yLabel: string, points: readonly Point[], options: ChartOptions = {}): string {
  const [width, height, left, right, top, bottom] = [460, 280, 56, 16, 28, 44];
  const xs = points.map((point) => point.x);
  const { limit } = options;
  const ys = points.map((point) => point.y).concat(limit ? [limit.y] : []);
  const xMax = Math.max(options.logX ? 2 : 1, ...xs);
  const yMax = niceCeiling(Math.max(1e-9, ...ys) * 1.1);
  const scale = options.logX ? (x: number) => Math.log(x) / Math.log(xMax) : (x: number) => x / xMax;
  const px = (x: number) => left + scale(x) * (width - left - right);
  const py = (y: number) => height - bottom - (y / yMax) * (height - top - bottom);
  const parts = [
    `<svg class="chart" role="img" aria-label="${escapeHtml(title)}" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">`,
    `<text x="${width / 2}" y="16" text-anchor="middle" class="title">${escapeHtml(title)}</text>`,
    `<line x1="${left}" y1="${py(0)}" x2="${width - right}" y2="${py(0)}" class="axis"/>`,
    `<line x1="${left}" y1="${py(0)}" x2="${left}" y2="${top}" class="axis"/>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const y = (yMax * i) / 4;
    parts.push(`<text x="${left - 6}" y="${py(y) + 4}" text-anchor="end" class="tick">${formatTick(y)}</text>`);
    if (i > 0) parts.push(`<line x1="${left}" y1="${py(y)}" x2="${width - right}" y2="${py(y)}" class="grid"/>`);
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    parts.push(`<text x="${px(x)}" y="${height - bottom + 16}" text-anchor="middle" class="tick">${x}</text>`);
  }
  parts.push(`<text x="${(left + width - right) / 2}" y="${height - 6}" text-anchor="middle" class="label">${escapeHtml(xLabel)}</text>`);
  parts.push(
    `<text x="12" y="${top + (height - top - bottom) / 2}" text-anchor="middle" class="label" transform="rotate(-90 12 ${top + (height - top - bottom) / 2})">${escapeHtml(yLabel)}</text>`,
  );
  if (limit) {
    parts.push(`<line x1="${left}" y1="${py(limit.y)}" x2="${width - right}" y2="${py(limit.y)}" class="limit"/>`);
    parts.push(`<text x="${width - right}" y="${py(limit.y) - 4}" text-anchor="end" class="tick">${escapeHtml(limit.label)}</text>`);
  }
  for (const name of [...new Set(points.map((point) => point.series))]) {
    const color = CLASS_COLORS[name] ?? '#111827';
    const own = points.filter((point) => point.series === name).sort((a, b) => a.x - b.x);
    if (own.length > 1)
      parts.push(
        `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${own.map((point) => `${px(point.x).toFixed(1)},${py(point.y).toFixed(1)}`).join(' ')}"/>`,
      );
    for (const point of own) {
      parts.push(
        `<circle class="point" cx="${px(point.x).toFixed(1)}" cy="${py(point.y).toFixed(1)}" r="${point.chosen ? 6 : 4}" fill="${color}"${point.chosen ? ' stroke="#111827" stroke-width="2"' : ''}><title>${escapeHtml(point.label)}</title></circle>`,
      );
    }
  }
  parts.push('</svg>');
  return parts.join('\n');
}

/** The memory allowed is drawn when it is near the trials' figures; far above them it would flatten them. */
function memoryChart(points: readonly Point[], limitMiB: number): string {
  const most = Math.max(0, ...points.map((point) => point.y));
  const title = 'Resident memory of the tree';
  if (limitMiB <= 2 * most)
    return chart(title, 'serving units (workers × threads)', 'MiB', points, {
      limit: { y: limitMiB, label: `limit ${Math.round(limitMiB)} MiB` },
    });
  return chart(`${title} (limit ${Math.round(limitMiB)} MiB)`, 'serving units (workers × threads)', 'MiB', points);
}

function niceCeiling(value: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((step) => step * magnitude).find((candidate) => candidate >= value)!;
}

function formatTick(value: number): string {
  return value >= 100 ? String(Math.round(value)) : value >= 1 ? value.toFixed(1) : value.toPrecision(2);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

export function renderHtml(result: TuneResult): string {
  const measured = result.trials.filter((trial) => trial.skipped === null && trial.reqPerSec !== null);
  const pointsOf = (value: (trial: Trial) => number | null) =>
    measured
      .filter((trial) => value(trial) !== null)
      .map((trial) => ({
        x: units(trial),
        y: value(trial)!,
        label: `${describeConfig(trial)}: ${formatTick(value(trial)!)}`,
        series: series(trial),
        chosen: trial === result.recommendation,
      }));
  const { profile, machine } = result;
  const legend = [...new Set(measured.map(series))]
    .map(
      (name) =>
        `<span class="key"><span class="swatch" style="background:${CLASS_COLORS[name] ?? '#111827'}"></span>${escapeHtml(name)}</span>`,
    )
    .join(' ');
  const charts = [
    chart(
      'Throughput',
      'serving units (workers × threads)',
      'req/s',
      pointsOf((trial) => trial.reqPerSec!),
    ),
    chart(
      'p99 latency',
      'serving units (workers × threads)',
      'ms',
      pointsOf((trial) => trial.p99Ms),
    ),
    memoryChart(
      pointsOf((trial) => trial.rssMiB!),
      machine.memoryMiB,
    ),
    chart(
      'Profile: one worker under rising load',
      'connections',
      'req/s',
      profile.steps.map((step) => ({
        x: step.connections,
        y: step.reqPerSec,
        label: `${connections(step.connections)}: ${Math.round(step.reqPerSec)} req/s`,
        series: 'async processes',
        chosen: step.connections === profile.saturationConnections,
      })),
      { logX: true },
    ),
  ];
  const rows = result.trials
    .map((trial) => {
      const cells = [...measuredCells(trial), trial.skipped === null ? String(trial.failures) : `skipped: ${trial.skipped}`];
      return `<tr${trial === result.recommendation ? ' class="chosen"' : ''}>${cells.map((cell) => `<td>${escapeHtml(cell)}</td>`).join('')}</tr>`;
    })
    .join('\n');
  const badPaths = result.paths.filter((check) => !good(check.status));
  const recommendation = result.recommendation
    ? `<p class="command"><code>${escapeHtml(commandLine(result)!)}</code></p>\n<pre>${escapeHtml(configSnippet(result.recommendation))}</pre>`
    : '<p class="command">No configuration fits.</p>';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>forkgate tune: ${escapeHtml(result.app)}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #111827; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart { border: 1px solid #e5e7eb; border-radius: 6px; background: #fff; }
.chart .title { font-weight: 600; font-size: 13px; } .chart .tick { font-size: 11px; fill: #4b5563; } .chart .label { font-size: 11px; fill: #374151; }
.chart .axis { stroke: #6b7280; } .chart .grid { stroke: #e5e7eb; } .chart .limit { stroke: #dc2626; stroke-dasharray: 4 3; }
.key { margin-right: 1em; } .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 4px; }
table { border-collapse: collapse; margin-top: 1em; } td, th { padding: 3px 10px; text-align: right; border-bottom: 1px solid #e5e7eb; } td:first-child, th:first-child { text-align: left; }
tr.chosen { background: #ecfdf5; font-weight: 600; }
.command code { font-size: 1.1em; background: #f3f4f6; padding: 4px 8px; border-radius: 4px; }
pre { background: #f3f4f6; padding: 8px; border-radius: 4px; }
.warning { color: #b91c1c; }
</style>
</head>
<body>
<h1>forkgate tune: ${escapeHtml(result.app)}</h1>
<p>${machine.cpus} CPUs, ${Math.round(machine.memoryMiB)} MiB (${escapeHtml(machine.memorySource)}); each trial ${result.durationSeconds} s at ${result.connections} connections. Bottleneck: <strong>${result.bottleneck}</strong>.</p>
${badPaths.map((check) => `<p class="warning">${escapeHtml(`${check.path} answered ${check.status ?? check.error}: left out of the load.`)}</p>`).join('\n')}
<h2>Recommendation</h2>
${recommendation}
<ul>
${result.reasons.map((reason) => `<li>${escapeHtml(reason)}</li>`).join('\n')}
</ul>
<h2>Trials</h2>
<p>${legend}</p>
<div class="charts">
${charts.join('\n')}
</div>
<table>
<tr><th>configuration</th><th>units</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>RSS MiB</th><th>CPU µs/req</th><th>failed</th></tr>
${rows}
</table>
<h2>Profile</h2>
<p>One worker: ${fixed(profile.cpuMs, 2)} ms of CPU per ${fixed(profile.requestMs, 2)} ms request; ${Math.round(profile.saturationReqPerSec)} req/s at ${connections(profile.saturationConnections)}, its event loop ${Math.round(profile.loopUtilization * 100)} % busy. Master ${whole(profile.masterMiB)} MiB, worker process ${whole(profile.processMiB)} MiB, each further serving thread ${whole(profile.threadMiB)} MiB.</p>
</body>
</html>
`;
}
