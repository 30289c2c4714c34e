/**
 * --check-config: boots one worker the way the arbiter does (same executable, Node options, user,
 * environment and settings), so the app is loaded as the pool would load it, and reports how the boot
 * ended. The worker binds no address: a server already running there is left alone.
 */
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nominalAddress } from '../config/bind.ts';
import type { Settings } from '../config/settings.ts';
import type { Certificates } from '../edge/tls.ts';
import { describeBootError, isProtocolMessage, type ListenPlan, type SerializedError, type WorkerMessage } from '../ipc/messages.ts';
import type { AppShape } from '../ipc/messages.ts';
import type { WorkerIdentity } from './privileges.ts';
import { WorkerHandle } from './worker-handle.ts';
import { spawnWorkerProcess, START_GRACE_MS } from './worker-process.ts';

/** The app's shape once the worker was ready; else what follows "does not load:" in the log. */
export type BootCheck = { readonly shape: AppShape } | { readonly failure: string };

export async function checkBoot(
  settings: Settings,
  certificates: Certificates | null,
  env: NodeJS.ProcessEnv,
  identity: WorkerIdentity | null,
): Promise<BootCheck> {
  // Behind the proxy a unit serves a unix socket of its own (and leaves TLS to the master); elsewhere it
  // is handed connections, which binds nothing (reuseport would join the port of a running server).
  const directory = settings.balance === 'proxy' ? fs.mkdtempSync(join(tmpdir(), 'forkgate-check-')) : null;
  try {
    if (directory && identity) fs.chownSync(directory, identity.uid, identity.gid);
    const listen: ListenPlan = directory ? { mode: 'proxy', directory } : { mode: 'handoff' };
    return await bootOneWorker(settings, directory ? null : certificates, env, identity, listen);
  } finally {
    if (directory) fs.rmSync(directory, { recursive: true, force: true });
  }
}

function bootOneWorker(
  settings: Settings,
  certificates: Certificates | null,
  env: NodeJS.ProcessEnv,
  identity: WorkerIdentity | null,
  listen: ListenPlan,
): Promise<BootCheck> {
  const worker = new WorkerHandle(1, 1, spawnWorkerProcess(settings, env, identity), Date.now());
  // As long as the arbiter lets a worker start Node, then wait for an app that calls listen() late.
  const limitMs = START_GRACE_MS + (settings.timeout || 30) * 1000;
  return new Promise((resolve) => {
    let shape: AppShape | null = null;
    let bootError: SerializedError | null = null;
    const deadline = setTimeout(() => worker.kill('SIGKILL'), limitMs);
    worker.child.on('message', (message: unknown) => {
      if (!isProtocolMessage<WorkerMessage>(message)) return;
      if (message.type === 'boot-error') bootError = message.error;
      if (message.type !== 'ready') return;
      shape = message.shape;
      worker.send({ type: 'drain' }); // serves nothing: it exits at once
    });
    worker.child.once('error', (error) => resolve({ failure: ` the worker could not start: ${error.message}` }));
    worker.child.once('exit', (code, signal) => {
      clearTimeout(deadline);
      if (shape) return resolve({ shape });
      if (bootError) return resolve({ failure: describeBootError(bootError) });
      const how = worker.signalSent
        ? `did not finish booting within ${limitMs / 1000} s`
        : signal
          ? `was killed by ${signal}`
          : `exited with code ${code}`;
      resolve({ failure: ` the worker ${how}` });
    });
    worker.send({
      type: 'boot',
      workerId: worker.id,
      generation: worker.generation,
      settings,
      certificates,
      listen,
      appAddress: nominalAddress(settings.bind[0]),
    });
  });
}
