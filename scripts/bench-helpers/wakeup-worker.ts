// The other side of scripts/bench-wakeups.ts: answers each wake-up on index 0 with one on index 1.
export {};
declare const self: Worker;
self.onmessage = async (e: MessageEvent<[SharedArrayBuffer, number]>) => {
  const [sab, n] = e.data;
  const h = new Int32Array(sab);
  for (let i = 1; i <= n; i++) {
    // Waits with the value just checked: a store between the check and the wait then makes it return at once.
    for (let seen = Atomics.load(h, 0); seen < i; seen = Atomics.load(h, 0)) {
      const w = Atomics.waitAsync(h, 0, seen);
      if (w.async) await w.value;
    }
    Atomics.store(h, 1, i);
    Atomics.notify(h, 1);
  }
  self.postMessage("done");
};
