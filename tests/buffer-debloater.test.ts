// Buffer debloating's parts (FLIP-183): the size a gate computes from its throughput (BufferDebloater), the size
// travelling from the consumer's end of a real ring to the producer's RingSender, and a real RecordWriter cutting
// its buffers at the announced size, with the records intact across the cuts.
import { describe, expect, test } from "bun:test";
import { BufferDebloater } from "../src/network/buffer-debloater.ts";
import { RingSender } from "../src/network/channel-ends.ts";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { RecordWriter, type BufferSender, type ChannelEvent } from "../src/network/record-writer.ts";
import { RecordDeserializer } from "../src/network/serialization.ts";
import { announceBufferSize, createRing, RingReader } from "../src/network/shared-ring.ts";

const SEGMENT = 32768;

describe("BufferDebloater", () => {
  test("settles at throughput * target / buffers, leaving idle time out of the throughput", () => {
    const d = new BufferDebloater({ targetMs: 1000, periodMs: 200, minBufferSize: 256 }, SEGMENT);
    // 100 KB/s busy all the time, 20 buffers in flight: 100,000 * 1 s / 20 = 5,000 bytes.
    for (let i = 0; i < 200; i++) d.update(20_000, 200, 20);
    expect(Math.abs(d.announced - 5000)).toBeLessThanOrEqual(5000 * 0.25 + 1);
    // The same bytes in half the time (the task idle the other half): twice the throughput, twice the size.
    for (let i = 0; i < 200; i++) d.update(20_000, 100, 20);
    expect(Math.abs(d.announced - 10_000)).toBeLessThanOrEqual(10_000 * 0.25 + 1);
  });

  test("clamped to min-segment-size and the segment; small changes are not announced; idle periods change nothing", () => {
    const d = new BufferDebloater({ targetMs: 1000, periodMs: 200, minBufferSize: 1024 }, SEGMENT);
    for (let i = 0; i < 300; i++) d.update(10, 200, 20);
    expect(d.announced).toBe(1024);
    expect(d.update(1_000_000, 0, 20)).toBeNull(); // idle the whole period
    const sizes: number[] = [];
    for (let i = 0; i < 300; i++) {
      const s = d.update(100_000_000, 200, 20);
      if (s !== null) sizes.push(s);
    }
    expect(d.announced).toBe(SEGMENT);
    // Each announced step is at least 25% away from the previous one, except the last one onto the clamp.
    expect(sizes.at(-1)).toBe(SEGMENT);
    for (let i = 1; i < sizes.length - 1; i++) expect(sizes[i]! >= sizes[i - 1]! * 1.25).toBe(true);
  });
});

describe("the announced size reaches the producer, which cuts its buffers at it", () => {
  test("the consumer's end of a ring announces; the producer's RingSender reads it", () => {
    const ring = createRing(4, SEGMENT);
    const sender = new RingSender(ring, () => {}, (e) => {
      throw e;
    });
    expect(sender.bufferSize()).toBe(0);
    announceBufferSize(ring, 2048);
    expect(sender.bufferSize()).toBe(2048);
    new RingReader(ring).announceBufferSize(4096);
    expect(sender.bufferSize()).toBe(4096);
  });

  test("a record writer finishes each buffer at the announced size; the stream decodes to the same records", async () => {
    const got: { size: number; bytes: Uint8Array }[] = [];
    let announced = 0;
    let writer: RecordWriter;
    const sender: BufferSender = {
      buffer: (ch, buf, size) => {
        got.push({ size, bytes: new Uint8Array(buf, 0, size).slice() });
        setTimeout(() => writer.recycle(buf, ch), 0);
      },
      event: (_ch: string, _e: ChannelEvent) => {},
      bufferSize: () => announced,
    };
    writer = new RecordWriter(["c0"], () => 0, new LocalBufferPool(8, SEGMENT, 0), false);
    writer.connect("c0", sender);
    const records = Array.from({ length: 400 }, (_, i) => ({ i, pad: "y".repeat(200) }));
    const emit = async (rs: unknown[]) => {
      for (const r of rs) {
        writer.emit(r);
        if (writer.backpressured) await writer.waitAvailable();
      }
      writer.flush();
    };
    await emit(records.slice(0, 200));
    const before = got.length;
    expect(got.every((b) => b.size > 2000)).toBe(true); // nothing announced: full segments (and a flushed rest)
    announced = 1500;
    await emit(records.slice(200));
    const after = got.slice(before);
    expect(after.length).toBeGreaterThan(20); // about 42 KB of records
    expect(after.every((b) => b.size <= 1500)).toBe(true);
    expect(after.slice(0, -1).every((b) => b.size === 1500)).toBe(true);
    const d = new RecordDeserializer();
    const out: unknown[] = [];
    for (const b of got) d.read(b.bytes, out);
    expect(out).toEqual(records);
  });
});
