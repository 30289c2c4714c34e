/** "1 worker", "3 workers": a count and its noun as a log line says them. */
export function count(n: number, noun: string, plural = `${noun}s`): string {
  return `${n} ${n === 1 ? noun : plural}`;
}
