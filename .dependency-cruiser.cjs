// Layers point one way: each layer imports only from layers below it (docs/architecture.md).
const layers = [
  ['^src/(config|log)/', '^src/(errors|version|node-version|process-title)\\.ts$'],
  ['^src/(ipc|hop|edge|supervisor)/', '^src/(hooks|module-hooks)\\.ts$'],
  ['^src/(worker|proxy)/'],
  ['^src/(master|metrics)/'],
  ['^src/(commands|tune)/', '^src/(cli|index)\\.ts$'],
];

const above = (rank) => layers.slice(rank + 1).flat();

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: { path: '^src/' }, to: { circular: true } },
    ...layers.slice(0, -1).flatMap((paths, rank) =>
      paths.map((path) => ({
        name: `layer-${rank}-imports-upward`,
        comment: 'A module imports a layer above its own: move the shared code or type down.',
        severity: 'error',
        from: { path },
        to: { path: above(rank) },
      })),
    ),
    { name: 'no-unresolvable', severity: 'error', from: { path: '^src/' }, to: { couldNotResolve: true } },
  ],
  options: { doNotFollow: { path: 'node_modules' }, tsPreCompilationDeps: true, tsConfig: { fileName: 'tsconfig.json' } },
};
