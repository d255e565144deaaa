// A synchronous sleep of the calling thread (Atomics.wait on a word nobody notifies), for task Workers that must not
// turn their event loop for a sub-millisecond pause: a paced source between chunks, an input gate polling.
const word = new Int32Array(new SharedArrayBuffer(4));

/** Blocks this thread for about ms milliseconds (plus the kernel's timer slack, 50-100 us). */
export function sleepSync(ms: number): void {
  Atomics.wait(word, 0, 0, ms);
}
