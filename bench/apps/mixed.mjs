// bench workload `mixed`: in each server process every 2000th request takes 20 ms of synchronous CPU,
// the rest are hello. Shows tail latency: quick requests queue behind the slow one on the same process.
import { burn } from './cpu.mjs';

let served = 0;

export default function mixed(req, res) {
  if (++served % 2000 === 0) burn(20);
  res.setHeader('content-type', 'text/plain');
  res.end('Hello world\n');
}
