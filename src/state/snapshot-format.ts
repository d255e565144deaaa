// The snapshot file formats, common to the heap and SQLite backends (so a snapshot of either restores into
// either). All integers are little-endian.
//
// Keyed state: one file per backend snapshot, with a key-group index.
//   0   8 bytes  magic "TMSTATEK"
//   8   u32      format version (1: a full snapshot; 2: a change set of an incremental checkpoint)
//   12  u32      header length H
//   16  u32      CRC32 of the header
//   20  H bytes  header, msgpack: { backend, maxParallelism, keyGroupRange: {start, end}, createdAt,
//                states: [{ name, kind, ttlMs (null without TTL) }] }
//   ... blocks, one per non-empty key group, in any order. A block is a sequence of entries:
//                varint state index (into header.states), varint length + key bytes,
//                varint length + user-key bytes (length 0: not map state), varint length + value bytes
//   ... index, msgpack: [[keyGroup, offset, length, crc32, entryCount], ...]
//   end-20  u32 index offset (low 32 bits), u32 index offset (high bits), u32 index length, u32 index CRC32,
//           4 bytes magic "TMKE"
// Key bytes and value bytes are those of serde.ts: a value state's value is msgpack([value, ts]) with TTL or
// msgpack(value) without; a list is its elements' encodings back to back; a map state has one entry per user key.
// A change set (version 2, header.changeSet true) has the same layout; there a value of length 0 is a deletion
// (a stored value is never empty). It holds the rows that changed since the checkpoint it builds on.
//
// Incremental checkpoints chain files: a keyed handle's `files` are a full snapshot followed by change sets, all
// applied in order, key group by key group. Full snapshots stay version 1, so they read as before.
//
// Operator state: one file per subtask snapshot.
//   0 8 bytes magic "TMSTATEO", u32 version (1), u32 payload length P, u32 CRC32 of the payload, P bytes msgpack:
//   { subtaskIndex, parallelism, createdAt, lists: [{ name, mode, elements }], broadcast: [{ name, entries: [[k, v]] }] }
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { StateFileError, type KeyGroupRange, type StateKind } from "./api.ts";
import { ByteReader, crc32, decode, encode } from "./serde.ts";

export const KEYED_FORMAT_VERSION = 1;
/** The format version of change-set files (incremental checkpoints). */
export const KEYED_CHANGESET_VERSION = 2;
export const OPERATOR_FORMAT_VERSION = 1;
const KEYED_MAGIC = "TMSTATEK";
const KEYED_END_MAGIC = "TMKE";
const OPERATOR_MAGIC = "TMSTATEO";
const TRAILER = 20;

export type BackendKind = "heap" | "sqlite";

export interface SnapshotStateMeta {
  name: string;
  kind: StateKind;
  ttlMs: number | null;
}

/** What `snapshot()` returns and `restore()` takes. Plain data: it can be sent to the JobManager as is. */
export interface KeyedSnapshotHandle {
  type: "keyed";
  backend: BackendKind;
  formatVersion: number;
  /** Applied in order: a full snapshot, then (incremental checkpoints) change sets. */
  files: string[];
  keyGroupRange: KeyGroupRange;
  maxParallelism: number;
  /** Bytes of all `files`: what a restore reads. */
  sizeBytes: number;
  /** Entries written by this snapshot (for a change set: changed rows, deletions included). */
  entries: number;
  /** Incremental checkpoints: the size of each of `files`, and the bytes this snapshot wrote itself (its last
   *  file); the other files belong to earlier checkpoints, which it references. Absent: one full file. */
  fileSizes?: number[];
  newBytes?: number;
  /** The checksum of each of `files`: the CRC32 of its index, which holds every block's CRC32 (so it changes with
   *  any block). Local recovery checks a local copy against it. Absent in handles written before it existed. */
  checksums?: number[];
}

/** Options of one snapshot. */
export interface SnapshotOptions {
  /** The checkpoint it is for: notifyCheckpointComplete(id) makes it the base of later change sets. */
  checkpointId?: number;
  /** Write only what changed since the last completed checkpoint, when the backend tracks changes and has
   *  such a base (else a full snapshot). Savepoints pass false: they must be self-contained. */
  incremental?: boolean;
}

export interface OperatorSnapshotHandle {
  type: "operator";
  formatVersion: number;
  files: string[];
  subtaskIndex: number;
  parallelism: number;
  sizeBytes: number;
}

interface KeyedHeader {
  backend: BackendKind;
  maxParallelism: number;
  keyGroupRange: KeyGroupRange;
  createdAt: number;
  states: SnapshotStateMeta[];
  /** A change set (format version 2): entries with an empty value are deletions. */
  changeSet?: boolean;
}

/**
 * The states in each keyed snapshot file's header, by path, for keyedSnapshotStates: a task's acknowledgement
 * lists the states of its whole chain, and reading every file's header each time cost about 5 ms per checkpoint
 * for a chain of a few files. File names are unique (snapshotFileName) and a file never changes once written,
 * so a path's states stay true. Filled by the writer and by reads; bounded, oldest first out.
 */
const statesOfFile = new Map<string, SnapshotStateMeta[]>();
const STATES_OF_FILE_MAX = 1024;
function rememberStates(file: string, states: SnapshotStateMeta[]): void {
  statesOfFile.delete(file);
  statesOfFile.set(file, states);
  if (statesOfFile.size > STATES_OF_FILE_MAX) statesOfFile.delete(statesOfFile.keys().next().value!);
}

let fileCounter = 0;
/** A fresh file name in `dir` (a snapshot never overwrites an earlier one's files). */
export function snapshotFileName(dir: string, prefix: string): string {
  const rand = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, "0");
  return path.join(dir, `${prefix}-${Date.now().toString(36)}-${(++fileCounter).toString(36)}-${rand}.snap`);
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return b;
}

/**
 * Bytes staged before one file write. Each awaited write is a round trip through the file I/O pool that costs the
 * task thread about 50 us (Bun, measured: 7 % of a keyed-sum thread checkpointing 10 times a second with one write
 * per key group); a snapshot of a few hundred KiB now takes one write.
 */
const STAGE_BYTES = 1 << 20;

/** Writes a keyed snapshot file block by block (blocks may come in any key-group order). */
export class KeyedSnapshotWriter {
  /** Bytes of the file so far, staged or written. */
  private offset = 0;
  /** Bytes of the file already handed to the file system. */
  private written = 0;
  private stage = new Uint8Array(64 * 1024);
  private staged = 0;
  private readonly index: [number, number, number, number, number][] = [];
  private entries = 0;
  private readonly tmp: string;

  private constructor(readonly file: string, private readonly fh: fsp.FileHandle, tmp: string, private readonly header: KeyedHeader) {
    this.tmp = tmp;
  }

  static async create(file: string, header: KeyedHeader): Promise<KeyedSnapshotWriter> {
    await fsp.mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.tmp`;
    const fh = await fsp.open(tmp, "w");
    const w = new KeyedSnapshotWriter(file, fh, tmp, header);
    const h = encode(header);
    const pre = new Uint8Array(20);
    pre.set(new TextEncoder().encode(KEYED_MAGIC), 0);
    const dv = new DataView(pre.buffer);
    dv.setUint32(8, header.changeSet ? KEYED_CHANGESET_VERSION : KEYED_FORMAT_VERSION, true);
    dv.setUint32(12, h.length, true);
    dv.setUint32(16, crc32(h), true);
    await w.write(pre);
    await w.write(h);
    return w;
  }

  /** Appends `b` (copied: the caller may reuse it); hands the staged bytes to the file system past STAGE_BYTES. */
  private async write(b: Uint8Array): Promise<void> {
    if (this.staged + b.length > STAGE_BYTES) await this.flush();
    if (b.length > STAGE_BYTES) {
      await this.writeAt(b, this.written);
      this.written += b.length;
    } else {
      if (this.staged + b.length > this.stage.length) {
        const grown = new Uint8Array(Math.min(STAGE_BYTES, Math.max(this.stage.length * 2, this.staged + b.length)));
        grown.set(this.stage.subarray(0, this.staged));
        this.stage = grown;
      }
      this.stage.set(b, this.staged);
      this.staged += b.length;
    }
    this.offset += b.length;
  }

  private async flush(): Promise<void> {
    if (this.staged === 0) return;
    await this.writeAt(this.stage.subarray(0, this.staged), this.written);
    this.written += this.staged;
    this.staged = 0;
  }

  private async writeAt(b: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < b.length) {
      const { bytesWritten } = await this.fh.write(b, done, b.length - done, position + done);
      done += bytesWritten;
    }
  }

  /** Appends one key group's block. `bytes` may be reused by the caller once the promise resolves. */
  async writeBlock(keyGroup: number, bytes: Uint8Array, entryCount: number): Promise<void> {
    if (entryCount === 0) return;
    this.index.push([keyGroup, this.offset, bytes.length, crc32(bytes), entryCount]);
    this.entries += entryCount;
    await this.write(bytes);
  }

  async finish(): Promise<KeyedSnapshotHandle> {
    this.index.sort((a, b) => a[0] - b[0]);
    const idx = encode(this.index);
    const indexOffset = this.offset;
    await this.write(idx);
    const tr = new Uint8Array(TRAILER);
    const dv = new DataView(tr.buffer);
    dv.setUint32(0, indexOffset % 2 ** 32, true);
    dv.setUint32(4, Math.floor(indexOffset / 2 ** 32), true);
    dv.setUint32(8, idx.length, true);
    dv.setUint32(12, crc32(idx), true);
    tr.set(new TextEncoder().encode(KEYED_END_MAGIC), 16);
    await this.write(tr);
    await this.flush();
    const checksum = crc32(idx);
    await this.fh.sync();
    await this.fh.close();
    await fsp.rename(this.tmp, this.file);
    rememberStates(this.file, this.header.states);
    return {
      type: "keyed",
      backend: this.header.backend,
      formatVersion: this.header.changeSet ? KEYED_CHANGESET_VERSION : KEYED_FORMAT_VERSION,
      files: [this.file],
      keyGroupRange: { ...this.header.keyGroupRange },
      maxParallelism: this.header.maxParallelism,
      sizeBytes: this.offset,
      entries: this.entries,
      checksums: [checksum],
    };
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => {});
    await fsp.rm(this.tmp, { force: true }).catch(() => {});
  }
}

export interface BlockInfo {
  offset: number;
  length: number;
  crc: number;
  entries: number;
}

/** Reads a keyed snapshot file; every inconsistency is a StateFileError naming the file. */
export class KeyedSnapshotReader {
  private constructor(
    readonly file: string,
    private readonly fh: fsp.FileHandle,
    readonly header: KeyedHeader,
    readonly blocks: Map<number, BlockInfo>,
  ) {}

  static async open(file: string): Promise<KeyedSnapshotReader> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, "r");
    } catch (e) {
      throw new StateFileError(file, `cannot open keyed state snapshot: ${(e as Error).message}`, { cause: e });
    }
    try {
      const size = (await fh.stat()).size;
      const bad = (what: string) => new StateFileError(file, `corrupt keyed state snapshot: ${what}`);
      if (size < 20 + TRAILER) throw bad(`only ${size} bytes`);
      const pre = await readAt(fh, 0, 20);
      if (new TextDecoder().decode(pre.subarray(0, 8)) !== KEYED_MAGIC) throw bad("bad magic number (not a keyed state snapshot)");
      const dv = new DataView(pre.buffer, pre.byteOffset, 20);
      const version = dv.getUint32(8, true);
      if (version !== KEYED_FORMAT_VERSION && version !== KEYED_CHANGESET_VERSION) {
        throw new StateFileError(
          file,
          `keyed state snapshot format version ${version} is not supported (this build reads versions ${KEYED_FORMAT_VERSION} and ${KEYED_CHANGESET_VERSION})`,
        );
      }
      const hLen = dv.getUint32(12, true);
      if (20 + hLen + TRAILER > size) throw bad("header length beyond the end of the file");
      const h = await readAt(fh, 20, hLen);
      if (crc32(h) !== dv.getUint32(16, true)) throw bad("header checksum mismatch");
      const header = decode(h) as KeyedHeader;
      if ((version === KEYED_CHANGESET_VERSION) !== (header.changeSet === true)) throw bad(`format version ${version} does not match its header`);
      const tr = await readAt(fh, size - TRAILER, TRAILER);
      if (new TextDecoder().decode(tr.subarray(16, 20)) !== KEYED_END_MAGIC) throw bad("bad trailer (truncated file?)");
      const tv = new DataView(tr.buffer, tr.byteOffset, TRAILER);
      const indexOffset = tv.getUint32(0, true) + tv.getUint32(4, true) * 2 ** 32;
      const indexLen = tv.getUint32(8, true);
      if (indexOffset < 20 + hLen || indexOffset + indexLen > size - TRAILER) throw bad("index outside the file");
      const idx = await readAt(fh, indexOffset, indexLen);
      if (crc32(idx) !== tv.getUint32(12, true)) throw bad("index checksum mismatch");
      const blocks = new Map<number, BlockInfo>();
      for (const [kg, offset, length, crc, entries] of decode(idx) as [number, number, number, number, number][]) {
        if (offset < 20 + hLen || offset + length > indexOffset) throw bad(`block of key group ${kg} outside the data area`);
        blocks.set(kg, { offset, length, crc, entries });
      }
      return new KeyedSnapshotReader(file, fh, header, blocks);
    } catch (e) {
      await fh.close().catch(() => {});
      if (e instanceof StateFileError) throw e;
      throw new StateFileError(file, `corrupt keyed state snapshot: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The block of a key group (checksum verified), or undefined when the snapshot has no entries for it. */
  async readBlock(keyGroup: number): Promise<Uint8Array | undefined> {
    const info = this.blocks.get(keyGroup);
    if (info === undefined) return undefined;
    const b = await readAt(this.fh, info.offset, info.length);
    if (crc32(b) !== info.crc) throw new StateFileError(this.file, `corrupt keyed state snapshot: checksum mismatch in the block of key group ${keyGroup}`);
    return b;
  }

  /** Calls `fn` for every entry of a block; `value` is null for a deletion (change sets only). */
  forEachEntry(keyGroup: number, block: Uint8Array, fn: (state: number, key: Uint8Array, userKey: Uint8Array | null, value: Uint8Array | null) => void): void {
    const r = new ByteReader(block);
    const changeSet = this.header.changeSet === true;
    try {
      while (!r.done) {
        const s = r.varint();
        if (s >= this.header.states.length) throw new RangeError(`state index ${s} out of range`);
        const key = r.lenBytes();
        const ukLen = r.varint();
        const uk = ukLen === 0 ? null : r.bytes(ukLen);
        const value = r.lenBytes();
        if (value.length === 0 && !changeSet) throw new RangeError("empty value in a full snapshot");
        fn(s, key, uk, value.length === 0 ? null : value);
      }
    } catch (e) {
      if (e instanceof StateFileError) throw e;
      throw new StateFileError(this.file, `corrupt keyed state snapshot: bad block of key group ${keyGroup}: ${(e as Error).message}`, { cause: e });
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/** A keyed snapshot file's checksum as its handle records it (the CRC32 of its index, from the trailer). */
export function readSnapshotChecksum(file: string): number {
  const fd = fs.openSync(file, "r");
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 20 + TRAILER) throw new StateFileError(file, `corrupt keyed state snapshot: only ${size} bytes`);
    const tr = new Uint8Array(TRAILER);
    if (fs.readSync(fd, tr, 0, TRAILER, size - TRAILER) !== TRAILER) throw new StateFileError(file, "corrupt keyed state snapshot: short read of the trailer");
    if (new TextDecoder().decode(tr.subarray(16, 20)) !== KEYED_END_MAGIC) throw new StateFileError(file, "corrupt keyed state snapshot: bad trailer (truncated file?)");
    return new DataView(tr.buffer).getUint32(12, true);
  } finally {
    fs.closeSync(fd);
  }
}

/** Opens file `index` of a handle's chain: the first must be a full snapshot, the others change sets. */
export async function openChainFile(file: string, index: number): Promise<KeyedSnapshotReader> {
  const r = await KeyedSnapshotReader.open(file);
  const changeSet = r.header.changeSet === true;
  if (changeSet !== index > 0) {
    await r.close();
    throw new StateFileError(
      file,
      changeSet
        ? "is a change set of an incremental checkpoint, but the handle lists no full snapshot before it (the chain is incomplete)"
        : "is a full snapshot, but the handle lists it after the start of its chain (only change sets may follow)",
    );
  }
  return r;
}

async function readAt(fh: fsp.FileHandle, position: number, length: number): Promise<Uint8Array> {
  const b = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(b, done, length - done, position + done);
    if (bytesRead === 0) throw new RangeError(`unexpected end of file at byte ${position + done}`);
    done += bytesRead;
  }
  return b;
}

/** Checks a keyed handle before restoring from it. */
export function checkKeyedHandle(h: unknown, maxParallelism: number): asserts h is KeyedSnapshotHandle {
  const k = h as KeyedSnapshotHandle;
  if (k?.type !== "keyed" || !Array.isArray(k.files) || typeof k.keyGroupRange?.start !== "number") {
    throw new TypeError(`not a keyed state snapshot handle: ${JSON.stringify(h)}`);
  }
  if (k.files.length === 0) throw new TypeError(`keyed state snapshot handle without files: ${JSON.stringify(h)}`);
  if (k.maxParallelism !== maxParallelism) {
    throw new Error(
      `cannot restore ${k.files.join(", ")}: it was taken with maxParallelism ${k.maxParallelism}, this backend has ${maxParallelism} (key groups cannot be remapped)`,
    );
  }
}

// ---- Operator state file ----

export interface OperatorSnapshotPayload {
  subtaskIndex: number;
  parallelism: number;
  createdAt: number;
  lists: { name: string; mode: "split" | "union"; elements: unknown[] }[];
  broadcast: { name: string; entries: [unknown, unknown][] }[];
}

/** Encodes synchronously (the consistent copy), so that only the file write is left for later. */
export function encodeOperatorSnapshot(payload: OperatorSnapshotPayload): Uint8Array {
  const p = encode(payload);
  const out = new Uint8Array(20 + p.length);
  out.set(new TextEncoder().encode(OPERATOR_MAGIC), 0);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, OPERATOR_FORMAT_VERSION, true);
  dv.setUint32(12, p.length, true);
  dv.setUint32(16, crc32(p), true);
  out.set(p, 20);
  return out;
}

export async function writeFileAtomic(file: string, bytes: Uint8Array): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, "w");
  try {
    let done = 0;
    while (done < bytes.length) done += (await fh.write(bytes, done, bytes.length - done, done)).bytesWritten;
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
}

export async function readOperatorSnapshot(file: string): Promise<OperatorSnapshotPayload> {
  let b: Uint8Array;
  try {
    b = new Uint8Array(await fsp.readFile(file));
  } catch (e) {
    throw new StateFileError(file, `cannot read operator state snapshot: ${(e as Error).message}`, { cause: e });
  }
  const bad = (what: string) => new StateFileError(file, `corrupt operator state snapshot: ${what}`);
  if (b.length < 20 || new TextDecoder().decode(b.subarray(0, 8)) !== OPERATOR_MAGIC) throw bad("bad magic number (not an operator state snapshot)");
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const version = dv.getUint32(8, true);
  if (version !== OPERATOR_FORMAT_VERSION) {
    throw new StateFileError(file, `operator state snapshot format version ${version} is not supported (this build reads version ${OPERATOR_FORMAT_VERSION})`);
  }
  const len = dv.getUint32(12, true);
  if (20 + len !== b.length) throw bad(`payload length ${len} does not match the file size ${b.length}`);
  const p = b.subarray(20);
  if (crc32(p) !== dv.getUint32(16, true)) throw bad("checksum mismatch");
  try {
    return decode(p) as OperatorSnapshotPayload;
  } catch (e) {
    throw bad((e as Error).message);
  }
}

export function fileSize(file: string): number {
  return fs.statSync(file).size;
}

// ---- What a snapshot holds, for checkpoint metadata and `savepoint info` ----

/** One state of an operator: keyed (by kind) or operator state (list with its redistribution mode, or broadcast). */
export interface StateInfo {
  name: string;
  scope: "keyed" | "operator";
  kind: StateKind | "broadcast";
  /** Operator list state: how it is redistributed on restore. */
  mode?: "split" | "union";
  /** Keyed state: its TTL, or null without. */
  ttlMs?: number | null;
}

/** The states of a keyed snapshot, from its files' headers (the data is not read). */
export async function keyedSnapshotStates(h: KeyedSnapshotHandle): Promise<StateInfo[]> {
  const out = new Map<string, StateInfo>();
  for (const f of h.files) {
    let states = statesOfFile.get(f);
    if (states === undefined) {
      const r = await KeyedSnapshotReader.open(f);
      try {
        states = r.header.states;
      } finally {
        await r.close();
      }
      rememberStates(f, states);
    }
    for (const s of states) if (!out.has(s.name)) out.set(s.name, { name: s.name, scope: "keyed", kind: s.kind, ttlMs: s.ttlMs });
  }
  return [...out.values()];
}

/** Bytes and entries (keys, or list elements, or map entries) per state name of a set of snapshots. */
export async function stateSizes(keyed: readonly KeyedSnapshotHandle[], operator: readonly OperatorSnapshotHandle[]): Promise<Map<string, { bytes: number; entries: number }>> {
  const sizes = new Map<string, { bytes: number; entries: number }>();
  const add = (name: string, bytes: number, entries: number) => {
    const s = sizes.get(name) ?? { bytes: 0, entries: 0 };
    s.bytes += bytes;
    s.entries += entries;
    sizes.set(name, s);
  };
  for (const h of keyed) {
    for (const f of h.files) {
      const r = await KeyedSnapshotReader.open(f);
      try {
        for (const kg of r.blocks.keys()) {
          const block = await r.readBlock(kg);
          if (block) r.forEachEntry(kg, block, (s, key, uk, value) => add(r.header.states[s]!.name, key.length + (uk?.length ?? 0) + (value?.length ?? 0), 1));
        }
      } finally {
        await r.close();
      }
    }
  }
  for (const h of operator) {
    for (const f of h.files) {
      const p = await readOperatorSnapshot(f);
      for (const l of p.lists) add(l.name, encode(l.elements).length, l.elements.length);
      for (const b of p.broadcast) add(b.name, encode(b.entries).length, b.entries.length);
    }
  }
  return sizes;
}
