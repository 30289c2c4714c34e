// bench workload `tail`: in each server process every 500th request holds the process for 20 ms, the
// rest are hello. Under a paced load well below capacity, the p99 shows how many quick requests were
// sent to a process while it was busy: the dispatch, not a saturated server's queue.
//
// The slow request spins on the clock rather than doing a fixed amount of work (as cpu.mjs does): it
// holds its process 20 ms in every row, however many other processes share the core.
let served = 0;

function holdFor(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

export default function tail(req, res) {
  if (++served % 500 === 0) holdFor(20);
  res.setHeader('content-type', 'text/plain');
  res.end('Hello world\n');
}
