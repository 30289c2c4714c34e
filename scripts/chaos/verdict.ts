/**
 * Which failed requests a fault excuses. The harness cannot see inside forkgate, so the rule is
 * conservative and stated once (scripts/chaos.ts, docs/reliability.md): a request may fail only if it was
 * in the hands of a unit the fault took down, or if it is the fault's own poison request.
 *
 * "In the hands of" unit U: the request was sent before U was seen gone and ended after the fault on U
 * began, and either the fixture logged U receiving it (behind the proxy: or forkgate's log says U closed
 * the connection without answering it, see ChaosServer.readHeld), or (not behind the proxy, where a
 * client's connection ends in the master) U took the request's connection: the fixture logged it, or U
 * answered the previous request on it.
 */
import { failed, type RequestRecord } from './load.ts';
import type { Receipts } from './server.ts';

export interface FaultedUnit {
  /** "pid/tid"; "pid/pid" stands for every unit of the process (a killed or stopped worker). */
  unit: string;
  /** When the fault on it began: the kill, the stop, the poison request sent. */
  since: number;
}

/** Whether a unit a request reached is (part of) the faulted one. */
function covers(faulted: string, unit: string): boolean {
  if (faulted === unit) return true;
  const [pid, tid] = faulted.split('/');
  return pid === tid && unit.split('/')[0] === pid;
}

export interface Judgement {
  failed: RequestRecord[];
  allowed: RequestRecord[];
  unallowed: RequestRecord[];
}

export function judge(
  records: readonly RequestRecord[],
  faulted: readonly FaultedUnit[],
  goneAt: ReadonlyMap<string, number>,
  receipts: Receipts,
  connectionsReachUnits: boolean,
): Judgement {
  const failures = records.filter(failed);
  const allowed: RequestRecord[] = [];
  const unallowed: RequestRecord[] = [];
  for (const record of failures) {
    const holders = holdersOf(record, receipts, connectionsReachUnits);
    const excused =
      record.poison === true ||
      faulted.some(({ unit, since }) => {
        const gone = goneAt.get(unit);
        return gone !== undefined && record.sentAt <= gone && record.endedAt >= since && holders.some((holder) => covers(unit, holder));
      });
    (excused ? allowed : unallowed).push(record);
  }
  return { failed: failures, allowed, unallowed };
}

/** The units that had the request, or its connection, in hand. */
export function holdersOf(record: RequestRecord, receipts: Receipts, connectionsReachUnits: boolean): string[] {
  const holders = (receipts.get(record.id) ?? []).map(({ unit }) => unit);
  if (connectionsReachUnits) {
    if (record.unitBefore) holders.push(record.unitBefore);
    // A client port names one connection while it is open: a receipt from its lifetime is this connection's.
    const taken = record.localPort ? (receipts.get(`@${record.localPort}`) ?? []) : [];
    for (const { unit, at } of taken) if (at >= record.connectedAt && at <= record.endedAt) holders.push(unit);
  }
  return holders;
}

/** One line per kind of unexcused failure, for the table's last column. */
export function summarize(records: readonly RequestRecord[]): string {
  const kinds = new Map<string, number>();
  for (const record of records) {
    const kind =
      record.status !== undefined ? `${record.status} on ${record.path}` : `${record.failure} (${record.detail ?? ''}) on ${record.path}`;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return [...kinds].map(([kind, count]) => `${count}× ${kind}`).join('; ');
}
