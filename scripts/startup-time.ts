// Cold start of the npm CLI and the single binary serving examples/hello.js with 4 workers: from exec to
// the first 200, and to "Ready: 4 workers serving". Median of N runs (default 5).
//   npm run build:binary && node scripts/startup-time.ts [N]
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const runs = Number(process.argv[2] ?? 5);
const commands = {
  'dist/forkgate (binary)': [`${root}dist/forkgate`],
  'node dist/forkgate.cjs': [process.execPath, `${root}dist/forkgate.cjs`],
};

for (const [name, command] of Object.entries(commands)) {
  const firstResponse: number[] = [];
  const ready: number[] = [];
  for (let run = 0; run < runs; run++) {
    const times = await coldStart(command);
    firstResponse.push(times.firstResponse);
    ready.push(times.ready);
  }
  console.log(`${name}: first 200 after ${median(firstResponse)} ms, 4 workers ready after ${median(ready)} ms (median of ${runs})`);
}

async function coldStart([command, ...args]: string[]): Promise<{ firstResponse: number; ready: number }> {
  const port = await freePort();
  const started = performance.now();
  const child = spawn(command!, [...args, '-w', '4', '-b', `127.0.0.1:${port}`, `${root}examples/hello.js`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const readyAt = new Promise<number>((resolve, reject) => {
    let output = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      output += chunk;
      if (/Ready: 4 workers serving/.test(output)) resolve(performance.now() - started);
    });
    child.once('exit', () => reject(new Error(`forkgate exited:\n${output}`)));
  });
  // Refused until the master listens; from then on the request waits for the first worker.
  let firstResponse = 0;
  for (let attempt = 0; attempt < 2000 && !firstResponse; attempt++) {
    if ((await get(port)) === 200) firstResponse = performance.now() - started;
    else await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const ready = await readyAt;
  child.kill('SIGTERM');
  await new Promise((resolve) => child.once('exit', resolve));
  if (!firstResponse) throw new Error('no 200 within 2000 attempts');
  return { firstResponse, ready };
}

function get(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, agent: false }, (res) => res.resume().on('end', () => resolve(res.statusCode!)));
    req.on('error', () => resolve(0));
    req.setTimeout(10_000, () => req.destroy());
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function median(values: number[]): number {
  return Math.round([...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!);
}
