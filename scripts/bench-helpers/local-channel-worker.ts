// Worker half of scripts/bench-local-channel.ts: one producer and one consumer per run, over either
// transferred ArrayBuffers (MessagePort, buffers recycled back) or a SharedArrayBuffer ring.
export {};
declare const self: Worker;

const SEG = 32 * 1024;

self.onmessage = (e: MessageEvent) => {
  const m = e.data;
  if (m.mode === "transfer") m.role === "producer" ? transferProducer(m.port, m.n, m.pool) : transferConsumer(m.port);
  else if (m.mode === "ring") m.role === "producer" ? ringProducer(m.sab, m.n, m.slots) : ringConsumer(m.sab, m.n, m.slots);
  else m.role === "producer" ? void ringProducerAsync(m.sab, m.n, m.slots) : void ringConsumerAsync(m.sab, m.n, m.slots);
};

function fill(view: Uint8Array, i: number): void {
  // Stand-in for serializing records into the buffer: touch every 64th byte.
  for (let p = 0; p < view.length; p += 64) view[p] = (i + p) & 0xff;
}

function transferProducer(port: MessagePort, n: number, poolSize: number): void {
  const pool: ArrayBuffer[] = Array.from({ length: poolSize }, () => new ArrayBuffer(SEG));
  let sent = 0;
  const t0 = performance.now();
  const pump = () => {
    while (pool.length > 0 && sent < n) {
      const b = pool.pop()!;
      fill(new Uint8Array(b), sent);
      sent++;
      port.postMessage(b, [b]);
    }
  };
  let back = 0;
  port.onmessage = (ev) => {
    pool.push(ev.data);
    if (++back === n) self.postMessage({ seconds: (performance.now() - t0) / 1000 });
    else pump();
  };
  pump();
}

function transferConsumer(port: MessagePort): void {
  let sum = 0;
  port.onmessage = (ev) => {
    const v = new Uint8Array(ev.data as ArrayBuffer);
    for (let p = 0; p < v.length; p += 64) sum += v[p]!;
    port.postMessage(ev.data, [ev.data]);
  };
}

// Ring layout: Int32 [0] = head (written by producer), [1] = tail (written by consumer); slots follow.
function ringProducer(sab: SharedArrayBuffer, n: number, slots: number): void {
  const idx = new Int32Array(sab, 0, 2);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    while (i - Atomics.load(idx, 1) >= slots) Atomics.wait(idx, 1, Atomics.load(idx, 1), 10);
    fill(new Uint8Array(sab, 8 + (i % slots) * SEG, SEG), i);
    Atomics.store(idx, 0, i + 1);
    Atomics.notify(idx, 0);
  }
  while (Atomics.load(idx, 1) < n) Atomics.wait(idx, 1, Atomics.load(idx, 1), 10);
  self.postMessage({ seconds: (performance.now() - t0) / 1000 });
}

function ringConsumer(sab: SharedArrayBuffer, n: number, slots: number): void {
  const idx = new Int32Array(sab, 0, 2);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    while (Atomics.load(idx, 0) <= i) Atomics.wait(idx, 0, i, 10);
    const v = new Uint8Array(sab, 8 + (i % slots) * SEG, SEG);
    for (let p = 0; p < v.length; p += 64) sum += v[p]!;
    Atomics.store(idx, 1, i + 1);
    Atomics.notify(idx, 1);
  }
}

// The same ring waiting with Atomics.waitAsync, so the Worker's event loop keeps running (as a task's
// mailbox needs: cancel, timers, other channels).
async function waitChange(a: Int32Array, i: number, value: number): Promise<void> {
  const r = Atomics.waitAsync(a, i, value, 10);
  if (r.async) await r.value;
}

async function ringProducerAsync(sab: SharedArrayBuffer, n: number, slots: number): Promise<void> {
  const idx = new Int32Array(sab, 0, 2);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    while (i - Atomics.load(idx, 1) >= slots) await waitChange(idx, 1, Atomics.load(idx, 1));
    fill(new Uint8Array(sab, 8 + (i % slots) * SEG, SEG), i);
    Atomics.store(idx, 0, i + 1);
    Atomics.notify(idx, 0);
  }
  while (Atomics.load(idx, 1) < n) await waitChange(idx, 1, Atomics.load(idx, 1));
  self.postMessage({ seconds: (performance.now() - t0) / 1000 });
}

async function ringConsumerAsync(sab: SharedArrayBuffer, n: number, slots: number): Promise<void> {
  const idx = new Int32Array(sab, 0, 2);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    while (Atomics.load(idx, 0) <= i) await waitChange(idx, 0, i);
    const v = new Uint8Array(sab, 8 + (i % slots) * SEG, SEG);
    for (let p = 0; p < v.length; p += 64) sum += v[p]!;
    Atomics.store(idx, 1, i + 1);
    Atomics.notify(idx, 1);
  }
}
