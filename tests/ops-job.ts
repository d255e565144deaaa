// The streaming job of the operations tests (REST API, dashboard, shutdown): runs until canceled, about 2000
// records/s at parallelism 2 (the sink sleeps 1 ms per record, which back-pressures the source), checkpoints
// every 300 ms. Vertices: "Numbers -> Doubler" (source chain) and "Sums -> Slow Sink" (after a keyBy).
export function opsJobSource(name: string): string {
  return `
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.setJobName(${JSON.stringify(name)}).enableCheckpointing(300).setBufferTimeout(0);
      env.fromSequence(1, 1e12).name("Numbers")
        .map((n) => n * 2).name("Doubler")
        .keyBy((n) => (n / 2) % 16)
        .reduce((a, b) => a + b).name("Sums")
        .addSink(() => { Atomics.wait(pause, 0, 0, 1); }).name("Slow Sink");
    };`;
}
