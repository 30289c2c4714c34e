// The part of autocannon's programmatic API that forkgate tune uses (the package ships no types).
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events';

  interface Options {
    url: string;
    connections: number;
    /** Seconds. */
    duration: number;
    /** Seconds a request may take before it counts as a timeout. */
    timeout?: number;
    /** Milliseconds between throughput samples; a run ends on one, so it also rounds the duration. */
    sampleInt?: number;
    /** Requests each connection sends in turn, over and over. */
    requests?: { path: string; method?: string }[];
  }

  interface Result {
    errors: number;
    timeouts: number;
  }

  interface Instance extends EventEmitter, PromiseLike<Result> {
    /** responseTime: milliseconds, fractional. */
    on(event: 'response', listener: (client: unknown, statusCode: number, bytes: number, responseTime: number) => void): this;
  }

  function autocannon(options: Options): Instance;
  export default autocannon;
}
