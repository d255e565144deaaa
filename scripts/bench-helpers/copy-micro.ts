// One-thread micro benchmark behind copyOf in src/runtime/operators.ts: the cost of a shallow copy of a small
// tuple by slice(), by a loop into new Array(n), and by an array literal (with and without the plain-array check the
// operator makes). Each case runs in a process of its own, so that no call site sees two ways or two tuple kinds.
// Run: bun scripts/bench-helpers/copy-micro.ts [records, default 20000000]
const WAYS: Record<string, (v: any) => unknown> = {
  slice: (v) => v.slice(),
  loop: (v) => {
    const n = v.length;
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = v[i];
    return out;
  },
  literal: (v) => [v[0], v[1]],
  "literal after the plain-array check": (v) => (Object.getPrototypeOf(v) === Array.prototype && v.length === 2 ? [v[0], v[1]] : v.slice()),
};
const KINDS: Record<string, (i: number) => unknown[]> = { int32: (i) => [i, 1], double: (i) => [i + 0.5, 1.5], "string key": (i) => [`k${i}`, 1] };

const [way, kind, n] = [process.env.COPY_WAY, process.env.COPY_KIND, Number(process.argv[2] ?? 20_000_000)];
if (way !== undefined && kind !== undefined) {
  const copy = WAYS[way]!;
  const src = Array.from({ length: 10_000 }, (_, i) => KINDS[kind]!(i));
  let sink: unknown;
  let best = Infinity;
  for (let rep = 0; rep < 3; rep++) {
    const t0 = performance.now();
    for (let x = 0; x < n; x++) sink = copy(src[x % 10_000]);
    best = Math.min(best, ((performance.now() - t0) / n) * 1e6);
  }
  void sink;
  console.log(`${kind} tuples, ${way}: ${best.toFixed(1)} ns per copy (best of 3)`);
} else {
  for (const k of Object.keys(KINDS)) {
    for (const w of Object.keys(WAYS)) {
      const p = Bun.spawnSync([process.execPath, import.meta.path, String(n)], { env: { ...process.env, COPY_WAY: w, COPY_KIND: k } });
      process.stdout.write(p.stdout);
    }
  }
}
