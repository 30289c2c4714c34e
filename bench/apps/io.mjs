// bench workload `io`: each request awaits a 20 ms timer (a database or upstream call), then answers.
import { setTimeout as sleep } from 'node:timers/promises';

export default async function io(req, res) {
  await sleep(20);
  res.setHeader('content-type', 'text/plain');
  res.end('Hello world\n');
}
