// Layers point one way: a module imports only from its own layer and those below it
// (docs/architecture.md, "Layers"). Bottom first. The metrics have a file at each layer they serve.
const layers = [
  ['^src/(errors|version|node-version|module-hooks|clock|proc)\\.ts$'],
  ['^src/log/'],
  ['^src/hooks\\.ts$'],
  ['^src/config/', '^src/process-title\\.ts$'],
  ['^src/(ipc|edge|supervisor)/', '^src/metrics/(report|quantile|aggregate|proxy-counts|statsd|recorder)\\.ts$'],
  ['^src/hop/'],
  ['^src/(worker|proxy)/', '^src/metrics/worker-side\\.ts$'],
  ['^src/master/', '^src/metrics/(pool-metrics|endpoint|dashboard)\\.ts$'],
  ['^src/(commands|tune)/', '^src/(cli|index)\\.ts$'],
];

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: { path: '^src/' }, to: { circular: true } },
    { name: 'no-unresolvable', severity: 'error', from: { path: '^src/' }, to: { couldNotResolve: true } },
    ...layers.slice(0, -1).flatMap((paths, rank) =>
      paths.map((path) => ({
        name: `imports-upward-from-layer-${rank}`,
        comment: 'A module imports from a layer above its own: move the shared code or type down.',
        severity: 'error',
        from: { path },
        to: { path: layers.slice(rank + 1).flat() },
      })),
    ),
  ],
  options: { doNotFollow: { path: 'node_modules' }, tsPreCompilationDeps: true, tsConfig: { fileName: 'tsconfig.json' } },
};
