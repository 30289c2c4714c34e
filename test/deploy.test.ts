// The deployment files' stop sequences, read from the files: who gets TERM when, against what
// forkgate promises (--graceful-timeout) and the SIGKILL at terminationGracePeriodSeconds.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ROOT } from './helpers/forkgate.ts';

/** Seconds forkgate needs past --graceful-timeout to close and exit, and an app past its TERM. */
const FORKGATE_EXIT_S = 2;
const APP_EXIT_S = 5;

interface Container {
  name: string;
  /** The program and its arguments, as the manifest runs them (command, else args). */
  run: string[];
  /** The preStop hook's sleep, in seconds (0 without one). */
  preStop: number;
  /** resources.limits.memory in MiB (NaN without one). */
  memoryLimitMiB: number;
}

function manifest(file: string): { grace: number; containers: Container[] } {
  const text = readFileSync(`${ROOT}deploy/${file}`, 'utf8').replace(/^\s*#.*\n/gm, '');
  const grace = Number(/terminationGracePeriodSeconds: (\d+)/.exec(text)?.[1]);
  const containers = text
    .split(/^ {8}- name: /m)
    .slice(1)
    .map((block) => {
      const list = (key: string) => {
        const inline = new RegExp(`^ {10}${key}: (\\[.*\\])$`, 'm').exec(block)?.[1];
        if (inline) return JSON.parse(inline) as string[];
        const items = new RegExp(`^ {10}${key}:\\n((?: {12}- .*\\n)+)`, 'm').exec(block)?.[1];
        return items ? [...items.matchAll(/^ {12}- (.*)$/gm)].map(([, item]) => JSON.parse(item!) as string) : null;
      };
      const sleep = /command: \["sleep", "(\d+)"\]/.exec(block)?.[1];
      const memory = /limits: \{.*memory: (\d+)Mi/.exec(block)?.[1];
      return {
        name: block.split('\n')[0]!.trim(),
        run: list('command') ?? list('args') ?? [],
        preStop: Number(sleep ?? 0),
        memoryLimitMiB: Number(memory),
      };
    });
  return { grace, containers };
}

/** --NAME=N or --NAME N, as a number; the default if not given. */
function flag(container: Container, name: string, otherwise: number): number {
  const at = container.run.findIndex((arg) => arg === `--${name}` || arg.startsWith(`--${name}=`));
  if (at < 0) return otherwise;
  const [, value = container.run[at + 1]] = container.run[at]!.split('=');
  return Number(value);
}

const gracefulTimeout = (container: Container) => flag(container, 'graceful-timeout', 30);

test('the sidecar pod stops in order: forkgate answers what it took before the app gets TERM, all before SIGKILL', () => {
  const { grace, containers } = manifest('kubernetes-sidecar.yaml');
  const forkgate = containers.find((container) => container.name === 'forkgate')!;
  const apps = containers.filter((container) => container !== forkgate);
  assert.ok(apps.length > 0, 'app containers');
  const forkgateGone = forkgate.preStop + gracefulTimeout(forkgate) + FORKGATE_EXIT_S;
  for (const app of apps) {
    // TERM must reach the app itself: a shell as PID 1 ignores it, and the pod waits for SIGKILL.
    assert.ok(app.run.length > 0 && !['sh', 'bash', '/bin/sh'].includes(app.run[0]!), `${app.name} runs ${app.run.join(' ')}`);
    assert.ok(app.preStop >= forkgateGone, `${app.name} gets TERM at ${app.preStop} s, before forkgate is gone at ${forkgateGone} s`);
    assert.ok(grace >= app.preStop + APP_EXIT_S, `SIGKILL at ${grace} s leaves ${app.name} less than ${APP_EXIT_S} s after its TERM`);
  }
});

test('the sidecar runs an image this repository builds: the Dockerfile has the forkgate stage it names', () => {
  const text = readFileSync(`${ROOT}deploy/kubernetes-sidecar.yaml`, 'utf8');
  assert.match(text, /docker build --target forkgate /);
  assert.match(readFileSync(`${ROOT}deploy/Dockerfile`, 'utf8'), /^FROM \S+ AS forkgate$/m);
});

test('the forkgate pod drains before SIGKILL: preStop + --graceful-timeout fits in the grace period', () => {
  const { grace, containers } = manifest('kubernetes.yaml');
  const [forkgate] = containers;
  assert.ok(grace >= forkgate!.preStop + gracefulTimeout(forkgate!) + FORKGATE_EXIT_S, `grace ${grace} s`);
});

test("the sidecar's memory limit holds the request bodies its queue may hold, each up to --buffer-size", () => {
  const forkgate = manifest('kubernetes-sidecar.yaml').containers.find((container) => container.name === 'forkgate')!;
  const upstreams = forkgate.run.filter((arg) => arg.startsWith('--upstream=')).length;
  const held = flag(forkgate, 'queue-limit', 1024) + upstreams * flag(forkgate, 'worker-connections', 1000);
  const bodiesMiB = (held * flag(forkgate, 'buffer-size', 1_048_576)) / 1_048_576;
  // Measured: an idle sidecar's master near 70 MiB of RSS; 64 MiB more leaves room for responses read ahead.
  assert.ok(forkgate.memoryLimitMiB >= 70 + bodiesMiB + 64, `limit ${forkgate.memoryLimitMiB} MiB for ${bodiesMiB} MiB of bodies`);
});
