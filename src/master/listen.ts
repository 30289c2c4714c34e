import * as fs from 'node:fs';
import type * as net from 'node:net';
import type { BindAddress } from '../config/bind.ts';

/** Listens on any bind form; rejects with the OS error (address in use, permission denied). */
export async function listenOn(server: net.Server, address: BindAddress, backlog?: number): Promise<void> {
  if (address.kind === 'unix') removeStaleSocket(address.path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const options =
      address.kind === 'tcp'
        ? { host: address.host, port: address.port, backlog }
        : address.kind === 'unix'
          ? { path: address.path, backlog }
          : { fd: address.fd, backlog };
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** A socket file left by a crashed run would make listen() fail with EADDRINUSE. */
function removeStaleSocket(path: string): void {
  try {
    if (fs.statSync(path).isSocket()) fs.unlinkSync(path);
  } catch {
    // absent: nothing to remove
  }
}
