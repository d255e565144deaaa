// Fixed-layout binary serializers for typed records (as Flink's TypeSerializers), used by RecordSerializer for the
// chunks of an edge whose record type is declared (DataStream.returns) or inferred from the first records. A layout
// is named by its signature (graph/record-type.ts signatureOf): s string (u32 length, bit 31 set when the bytes are
// WTF-8 because the string has a lone surrogate, then the bytes), i int32, l and d float64, b one byte, (..) a tuple
// field by field, {..} an object field by field in the signature's order, @t an event-time record [ts|null, t] (a
// byte 0 for null or 1 then the float64). All little-endian. Each layout compiles once (new Function) to an encoder
// and a decoder without per-field dispatch.
import { describeRecordType, signatureOf, type RecordType } from "../graph/record-type.ts";

/** A parsed signature. */
export type Layout =
  | { t: "s" | "i" | "l" | "d" | "b" }
  | { t: "("; f: Layout[] }
  | { t: "{"; n: string[]; f: Layout[] }
  | { t: "@"; inner: Layout };

export function parseSignature(sig: string): Layout {
  let p = 0;
  const fail = (what: string): never => {
    throw new Error(`corrupt record stream: bad typed layout ${JSON.stringify(sig.slice(0, 200))} at ${p}: ${what}`);
  };
  const one = (depth: number): Layout => {
    if (depth > 18) fail("nested too deep");
    const c = sig[p++];
    if (c === "s" || c === "i" || c === "l" || c === "d" || c === "b") return { t: c };
    if (c === "@") return { t: "@", inner: one(depth + 1) };
    if (c === "(") {
      const f: Layout[] = [];
      while (sig[p] !== ")") {
        if (p >= sig.length) fail("unterminated tuple");
        f.push(one(depth + 1));
      }
      p++;
      if (f.length === 0) fail("empty tuple");
      return { t: "(", f };
    }
    if (c === "{") {
      const n: string[] = [];
      const f: Layout[] = [];
      while (sig[p] !== "}") {
        if (sig[p] !== '"') fail("expected a field name");
        let q = p + 1;
        while (q < sig.length && sig[q] !== '"') q += sig[q] === "\\" ? 2 : 1;
        if (q >= sig.length) fail("unterminated field name");
        const name = JSON.parse(sig.slice(p, q + 1)) as string;
        if (name === "__proto__" || n.includes(name)) fail(`field name ${JSON.stringify(name)}`);
        n.push(name);
        p = q + 1;
        f.push(one(depth + 1));
      }
      p++;
      if (f.length === 0) fail("empty object");
      return { t: "{", n, f };
    }
    return fail(`unexpected ${JSON.stringify(c ?? "end")}`);
  };
  const l = one(0);
  if (p !== sig.length) fail("trailing characters");
  return l;
}

export function layoutOf(t: RecordType): Layout {
  return parseSignature(signatureOf(t));
}

/** The bytes an encoder writes to; grows by doubling. */
export class TypedOut {
  buf = new Uint8Array(16 * 1024);
  dv = new DataView(this.buf.buffer);
  /** Makes room for `need` bytes after pos (keeping the bytes before it). */
  grow(pos: number, need: number): void {
    let size = this.buf.length * 2;
    while (size < pos + need) size *= 2;
    const nb = new Uint8Array(size);
    nb.set(this.buf.subarray(0, pos));
    this.buf = nb;
    this.dv = new DataView(nb.buffer);
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** Writes s (u32 length and flag, then UTF-8, or WTF-8 with a lone surrogate) at pos; leaves room for `fix` more bytes. */
function writeString(o: TypedOut, pos: number, s: string, fix: number): number {
  const n = s.length;
  if (pos + 4 + n * 3 + fix > o.buf.length) o.grow(pos, 4 + n * 3 + fix);
  const buf = o.buf;
  let q = pos + 4;
  let flag = 0;
  if (n >= 64 && s.isWellFormed()) {
    q += textEncoder.encodeInto(s, buf.subarray(q)).written;
  } else {
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) buf[q++] = c;
      else if (c < 0x800) {
        buf[q++] = 0xc0 | (c >> 6);
        buf[q++] = 0x80 | (c & 63);
      } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++i) - 0xdc00);
        buf[q++] = 0xf0 | (cp >> 18);
        buf[q++] = 0x80 | ((cp >> 12) & 63);
        buf[q++] = 0x80 | ((cp >> 6) & 63);
        buf[q++] = 0x80 | (cp & 63);
      } else {
        // A lone surrogate is kept (as WTF-8): the string comes back as it was, not with U+FFFD.
        if ((c & 0xf800) === 0xd800) flag = 0x80000000;
        buf[q++] = 0xe0 | (c >> 12);
        buf[q++] = 0x80 | ((c >> 6) & 63);
        buf[q++] = 0x80 | (c & 63);
      }
    }
  }
  o.dv.setUint32(pos, (q - pos - 4 + flag) >>> 0, true);
  return q;
}

/** Where readString left off. */
const at = { p: 0 };
const units: number[] = [];

/** The string at p of a chunk that ends at chunkEnd. */
function readString(src: Uint8Array, dv: DataView, p: number, chunkEnd: number): string {
  const h = dv.getUint32(p, true);
  const len = h & 0x7fffffff;
  const start = p + 4;
  const end = start + len;
  if (end > chunkEnd) throw new Error(`corrupt record stream: a string of ${len} bytes runs past its chunk`);
  at.p = end;
  if (h < 0x80000000) {
    if (len > 32) return textDecoder.decode(src.subarray(start, end));
    let or = 0;
    for (let i = start; i < end; i++) or |= src[i]!;
    // Short ASCII (keys, mostly): String.fromCharCode with the bytes as arguments is the cheapest way in.
    if (or < 0x80) return asciiString(src, start, end);
  }
  units.length = 0;
  let i = start;
  while (i < end) {
    const b = src[i++]!;
    if (b < 0x80) units.push(b);
    else if (b < 0xe0) units.push(((b & 0x1f) << 6) | (src[i++]! & 63));
    else if (b < 0xf0) units.push(((b & 0x0f) << 12) | ((src[i++]! & 63) << 6) | (src[i++]! & 63));
    else {
      const cp = (((b & 0x07) << 18) | ((src[i++]! & 63) << 12) | ((src[i++]! & 63) << 6) | (src[i++]! & 63)) - 0x10000;
      units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
    }
  }
  if (units.length <= 4096) return String.fromCharCode.apply(null, units);
  let s = "";
  for (let k = 0; k < units.length; k += 4096) s += String.fromCharCode.apply(null, units.slice(k, k + 4096));
  return s;
}

function asciiString(src: Uint8Array, i: number, end: number): string {
  switch (end - i) {
    case 0:
      return "";
    case 1:
      return String.fromCharCode(src[i]!);
    case 2:
      return String.fromCharCode(src[i]!, src[i + 1]!);
    case 3:
      return String.fromCharCode(src[i]!, src[i + 1]!, src[i + 2]!);
    case 4:
      return String.fromCharCode(src[i]!, src[i + 1]!, src[i + 2]!, src[i + 3]!);
    case 5:
      return String.fromCharCode(src[i]!, src[i + 1]!, src[i + 2]!, src[i + 3]!, src[i + 4]!);
    case 6:
      return String.fromCharCode(src[i]!, src[i + 1]!, src[i + 2]!, src[i + 3]!, src[i + 4]!, src[i + 5]!);
    case 7:
      return String.fromCharCode(src[i]!, src[i + 1]!, src[i + 2]!, src[i + 3]!, src[i + 4]!, src[i + 5]!, src[i + 6]!);
    default: {
      const head = String.fromCharCode(src[i]!, src[i + 1]!, src[i + 2]!, src[i + 3]!, src[i + 4]!, src[i + 5]!, src[i + 6]!, src[i + 7]!);
      return end - i === 8 ? head : head + asciiString(src, i + 8, end);
    }
  }
}

/** Encodes records from pos on; returns the end, or -1 when a record does not fit the layout. */
export type Encoder = (records: unknown[], o: TypedOut, pos: number) => number;
/**
 * Decodes a chunk's records (bytes start..end of src, after the chunk's signature; dv: a DataView of all of src) into
 * out, or, with `each`, hands each record to it as it is decoded (the task processes it at once: InputGate.poll).
 * With `goOn` as well, it is asked every LOOK_EVERY records handed over and at the chunk's end whether to go on: on
 * false the chunk's other records go to out, and the decoder returns true (a count in a local costs the records nothing measurable, where
 * chunks cut at 64 records for the question cost them about 4 %). Bytes that end in the middle of a record throw a
 * corrupt-stream error; what `each` throws passes through as it is.
 */
export type Decoder = (src: Uint8Array, dv: DataView, start: number, end: number, out: unknown[], each?: (record: unknown) => void, goOn?: () => boolean) => boolean;

/** Records handed to `each` between two questions to `goOn` (a power of two). */
export const LOOK_EVERY = 64;

/** Fixed bytes of a record (strings count their length word only). */
function fixedSize(l: Layout): number {
  switch (l.t) {
    case "s":
    case "i":
      return 4;
    case "l":
    case "d":
      return 8;
    case "b":
      return 1;
    case "@":
      return 9 + fixedSize(l.inner);
    default:
      return l.f.reduce((a, f) => a + fixedSize(f), 0);
  }
}

/**
 * strict: an inferred layout, whose objects must be plain with exactly its keys in its order (so a record decodes to
 * the same JSON); a declared one takes any object with exactly its fields, in any order.
 */
function compileEncoder(l: Layout, strict: boolean): Encoder {
  const { body, consts, FIX } = encoderBody(l, strict);
  const src =
    `return function encode(records, o, pos) {\n` +
    `let buf = o.buf, dv = o.dv;\n` +
    `for (let r = 0; r < records.length; r++) {\n` +
    `if (pos + ${FIX} > buf.length) { o.grow(pos, ${FIX}); buf = o.buf; dv = o.dv; }\n` +
    `const v = records[r];\n${body}}\nreturn pos;\n}`;
  return new Function("ws", "K", "OP", src)(writeString, consts, Object.prototype) as Encoder;
}

/**
 * One record of a fixed-size layout (no string) written at pos into buf (dv: a DataView of the same bytes), which
 * must have `size` bytes from pos on; returns the end, or -1 when the record does not fit the layout (bytes from pos
 * on may be written then). The record writer encodes straight into its network buffer with it (record-writer.ts).
 */
export type RecordEncoder = (v: unknown, buf: Uint8Array, dv: DataView, pos: number) => number;

function hasString(l: Layout): boolean {
  switch (l.t) {
    case "s":
      return true;
    case "i":
    case "l":
    case "d":
    case "b":
      return false;
    case "@":
      return hasString(l.inner);
    default:
      return l.f.some(hasString);
  }
}

function compileRecordEncoder(l: Layout, strict: boolean): RecordEncoder {
  const { body, consts } = encoderBody(l, strict);
  const src = `return function encodeRecord(v, buf, dv, pos) {\n${body}return pos;\n}`;
  return new Function("ws", "K", "OP", src)(writeString, consts, Object.prototype) as RecordEncoder;
}

/** The statements that write record `v` at pos (advancing it), or return -1 when it does not fit; FIX: its fixed bytes. */
function encoderBody(l: Layout, strict: boolean): { body: string; consts: unknown[]; FIX: number } {
  const consts: unknown[] = [];
  let tmp = 0;
  const FIX = fixedSize(l);
  const gen = (l: Layout, v: string): string => {
    switch (l.t) {
      case "s":
        return `if (typeof ${v} !== "string") return -1; pos = ws(o, pos, ${v}, ${FIX}); buf = o.buf; dv = o.dv;\n`;
      case "i":
        return `if (typeof ${v} !== "number" || (${v} | 0) !== ${v} || (${v} === 0 && 1 / ${v} < 0)) return -1; dv.setInt32(pos, ${v}, true); pos += 4;\n`;
      case "l":
        return `if (typeof ${v} !== "number" || !Number.isInteger(${v})) return -1; dv.setFloat64(pos, ${v}, true); pos += 8;\n`;
      case "d":
        return `if (typeof ${v} !== "number") return -1; dv.setFloat64(pos, ${v}, true); pos += 8;\n`;
      case "b":
        return `if (${v} === true) buf[pos++] = 1; else if (${v} === false) buf[pos++] = 0; else return -1;\n`;
      case "@": {
        const ts = `t${tmp++}`;
        const x = `v${tmp++}`;
        return (
          `if (!Array.isArray(${v}) || ${v}.length !== 2) return -1; const ${ts} = ${v}[0];\n` +
          `if (${ts} === null) buf[pos++] = 0; else if (typeof ${ts} === "number") { buf[pos++] = 1; dv.setFloat64(pos, ${ts}, true); pos += 8; } else return -1;\n` +
          `const ${x} = ${v}[1];\n` +
          gen(l.inner, x)
        );
      }
      case "(": {
        let code = `if (!Array.isArray(${v}) || ${v}.length !== ${l.f.length}) return -1;\n`;
        l.f.forEach((f, i) => {
          const x = `v${tmp++}`;
          code += `const ${x} = ${v}[${i}];\n` + gen(f, x);
        });
        return code;
      }
      case "{": {
        let code = `if (typeof ${v} !== "object" || ${v} === null || Array.isArray(${v})) return -1;\n`;
        const c = `c${tmp++}`;
        if (strict) {
          const names = consts.push(l.n) - 1;
          code += `if (Object.getPrototypeOf(${v}) !== OP) return -1; let ${c} = 0; for (const k in ${v}) { if (k !== K[${names}][${c}]) return -1; ${c}++; } if (${c} !== ${l.n.length}) return -1;\n`;
        } else code += `let ${c} = 0; for (const k in ${v}) ${c}++; if (${c} !== ${l.n.length}) return -1;\n`;
        l.f.forEach((f, i) => {
          const x = `v${tmp++}`;
          code += `const ${x} = ${v}[${JSON.stringify(l.n[i])}];\n` + gen(f, x);
        });
        return code;
      }
    }
  };
  return { body: gen(l, "v"), consts, FIX };
}

function compileDecoder(l: Layout, sig: string): Decoder {
  let tmp = 0;
  /** Statements that leave the value in the returned variable. */
  const gen = (l: Layout): [string, string] => {
    const v = `v${tmp++}`;
    switch (l.t) {
      case "s":
        return [`const ${v} = rs(src, dv, p, end); p = at.p;\n`, v];
      case "i":
        return [`const ${v} = dv.getInt32(p, true); p += 4;\n`, v];
      case "l":
      case "d":
        return [`const ${v} = dv.getFloat64(p, true); p += 8;\n`, v];
      case "b":
        return [`const ${v} = src[p++] === 1;\n`, v];
      case "@": {
        const [code, x] = gen(l.inner);
        return [`let ${v} = null; if (src[p++] === 1) { ${v} = dv.getFloat64(p, true); p += 8; }\n${code}`, `[${v}, ${x}]`];
      }
      case "(": {
        let code = "";
        const xs: string[] = [];
        for (const f of l.f) {
          const [c, x] = gen(f);
          code += c;
          xs.push(x);
        }
        return [code + `const ${v} = [${xs.join(", ")}];\n`, v];
      }
      case "{": {
        let code = "";
        const xs: string[] = [];
        l.f.forEach((f, i) => {
          const [c, x] = gen(f);
          code += c;
          xs.push(`${JSON.stringify(l.n[i])}: ${x}`);
        });
        return [code + `const ${v} = {${xs.join(", ")}};\n`, v];
      }
    }
  };
  const [code, v] = gen(l);
  // A record that runs past the chunk's end (the bytes after it read as its last fields, or a DataView read past the
  // buffer's end, a RangeError unless each threw it): a truncated or corrupt chunk. Checked before the record is handed on.
  const corrupt = JSON.stringify(`corrupt record stream: a typed chunk (layout ${sig.slice(0, 200)}) ends in the middle of a record`);
  const src =
    `return function decode(src, dv, p, end, out, each, goOn) {\n` +
    `let inEach = false, n = 0, stopped = false;\n` +
    `try {\n` +
    `while (p < end) {\n${code}if (p > end) throw new Error(${corrupt});\n` +
    `if (each === undefined) out.push(${v});\n` +
    `else {\ninEach = true; each(${v}); inEach = false;\n` +
    `if (goOn !== undefined && (++n & ${LOOK_EVERY - 1}) === 0 && !goOn()) { each = undefined; stopped = true; }\n}\n}\n` +
    `} catch (e) {\nif (!inEach && e instanceof RangeError) throw new Error(${corrupt});\nthrow e;\n}\n` +
    // Asked at the chunk's end too, unless its last record was just asked about.
    `return stopped || (each !== undefined && goOn !== undefined && (n & ${LOOK_EVERY - 1}) !== 0 && !goOn());\n}`;
  return new Function("rs", "at", src)(readString, at) as Decoder;
}

export interface CompiledLayout {
  sig: string;
  /** The signature's UTF-8 bytes, as chunks carry it. */
  sigBytes: Uint8Array;
  layout: Layout;
  encode: Encoder;
  decode: Decoder;
  /** A fixed-size layout's one-record encoder and its bytes per record; null when the layout has a string. */
  direct: { encode: RecordEncoder; size: number } | null;
}

const compiled = new Map<string, CompiledLayout>();

/** The compiled layout of a signature (once per signature and mode per thread). */
export function compileLayout(sig: string, strict: boolean): CompiledLayout {
  const key = (strict ? "!" : "=") + sig;
  let c = compiled.get(key);
  if (c === undefined) {
    const layout = parseSignature(sig);
    const direct = hasString(layout) ? null : { encode: compileRecordEncoder(layout, strict), size: fixedSize(layout) };
    c = { sig, sigBytes: textEncoder.encode(sig), layout, encode: compileEncoder(layout, strict), decode: compileDecoder(layout, sig), direct };
    compiled.set(key, c);
  }
  return c;
}

/** Decodes a typed chunk: its tag byte, u16 signature length, the signature, the records. */
export class TypedChunkReader {
  private last: CompiledLayout | null = null;

  read(chunk: Uint8Array, out: unknown[], each?: (record: unknown) => void, goOn?: () => boolean): boolean {
    return this.readAt(chunk, new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength), 0, chunk.length, out, each, goOn);
  }

  /**
   * The typed chunk at bytes start..end of src (dv: a DataView of src), without a view of it made: a buffer holds
   * dozens of chunks, and two views each cost a buffer of small records about 7 % of the consumer's time.
   */
  /** Returns whether `goOn` said to stop (see Decoder). */
  readAt(src: Uint8Array, dv: DataView, start: number, end: number, out: unknown[], each?: (record: unknown) => void, goOn?: () => boolean): boolean {
    if (end - start < 3) throw new Error("corrupt record stream: a typed chunk without its layout");
    const n = (src[start + 1]! << 8) | src[start + 2]!;
    if (n === 0 || end - start < 3 + n) throw new Error(`corrupt record stream: a typed chunk's layout of ${n} bytes does not fit in its ${end - start}`);
    let c = this.last;
    if (c === null || !sameBytes(c.sigBytes, src, start + 3, end)) {
      c = compileLayout(textDecoder.decode(src.subarray(start + 3, start + 3 + n)), false);
      this.last = c;
    }
    return c.decode(src, dv, start + 3 + n, end, out, each, goOn);
  }
}

/** Whether a's bytes are at b[off..] (before end), preceded by their u16 length. */
function sameBytes(a: Uint8Array, b: Uint8Array, off: number, end: number): boolean {
  if (end - off < a.length || ((b[off - 2]! << 8) | b[off - 1]!) !== a.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[off + i]) return false;
  return true;
}

/**
 * The layout signature of a record as inference sees it: a primitive (string "s", number "d", boolean "b"), or a
 * tuple or a plain object (1 to 64 fields) of primitives; null for anything else (msgpack carries it). With `ints`, a
 * number that is an int32 (and not -0) is "i": see inferChunkSignature.
 */
export function inferSignature(v: unknown, eventTime: boolean, ints = false): string | null {
  if (eventTime) {
    if (!Array.isArray(v) || v.length !== 2 || (v[0] !== null && typeof v[0] !== "number")) return null;
    const inner = inferSignature(v[1], false, ints);
    return inner === null ? null : "@" + inner;
  }
  const p = primitiveSig(v, ints);
  if (p !== null) return p;
  if (Array.isArray(v)) {
    if (v.length === 0 || v.length > 64) return null;
    let sig = "(";
    for (let i = 0; i < v.length; i++) {
      const f = primitiveSig(v[i], ints);
      if (f === null) return null;
      sig += f;
    }
    return sig + ")";
  }
  if (typeof v === "object" && v !== null && Object.getPrototypeOf(v) === Object.prototype) {
    let sig = "{";
    let n = 0;
    for (const k in v) {
      const f = primitiveSig((v as Record<string, unknown>)[k], ints);
      if (f === null || k === "__proto__" || ++n > 64) return null;
      sig += JSON.stringify(k) + f;
    }
    return n === 0 ? null : sig + "}";
  }
  return null;
}

/**
 * What an "i" (INT) field holds: a number that is an int32 and not -0. The compiled encoder writes the same test
 * inline (compileEncoder, case "i"); inference and the mismatch message use this one.
 */
function isInt32(v: unknown): v is number {
  return typeof v === "number" && (v | 0) === v && !Object.is(v, -0);
}

function primitiveSig(v: unknown, ints: boolean): string | null {
  if (typeof v === "number") return ints && isInt32(v) ? "i" : "d";
  return typeof v === "string" ? "s" : typeof v === "boolean" ? "b" : null;
}

/**
 * The layout to infer from a chunk: the first record's shape (inferSignature), with a number field int32 ("i") where
 * every record of that shape in the chunk has an int32 there, else float64 ("d"). An int32 costs half the bytes, and
 * it decodes to a number JavaScriptCore keeps as an int32 (a float64 read back stays a double, and the keyed path
 * downstream runs slower on doubles: docs/benchmarks.md, "Integer fields inferred as int32"). `widen` is a signature
 * inferred before, of the same shape: its float64 fields stay float64, so that a layout only ever widens. shape: the
 * signature with every number "d", which two signatures share exactly when they differ only in int32 against float64.
 */
export function inferChunkSignature(records: unknown[], eventTime: boolean, widen?: { shape: string; sig: string }): { shape: string; sig: string } | null {
  const shape = widen?.shape ?? inferSignature(records[0], eventTime);
  if (shape === null) return null;
  let sig = widen?.sig ?? inferSignature(records[0], eventTime, true)!;
  for (let r = 0; r < records.length; r++) {
    const s = inferSignature(records[r], eventTime, true);
    if (s === null || s === sig || s.length !== sig.length || inferSignature(records[r], eventTime) !== shape) continue;
    sig = joinSignatures(sig, s);
  }
  return { shape, sig };
}

/** Two signatures of one shape: "d" wherever either has it (they differ only where one has "i", the other "d"). */
function joinSignatures(a: string, b: string): string {
  let out = "";
  for (let i = 0; i < a.length; i++) out += a[i] === b[i] ? a[i] : "d";
  return out;
}

/** A record that does not match the type its operator declared (DataStream.returns). */
export class RecordTypeError extends Error {
  override name = "RecordTypeError";
}

/**
 * Why a record does not match a declared type: `operator "Map" declared Types.TUPLE(STRING, INT): field 1 is "x",
 * expected INT`. Field paths are the record's (an event-time record's timestamp wrapper is not shown).
 */
export function mismatchError(declared: { type: RecordType; operator: string; declaredBy?: string }, record: unknown, eventTime: boolean): RecordTypeError {
  const { type, operator, declaredBy } = declared;
  let why: string | null;
  if (eventTime && (!Array.isArray(record) || record.length !== 2 || (record[0] !== null && typeof record[0] !== "number"))) why = `its event timestamp is ${show(Array.isArray(record) ? record[0] : record)}`;
  else why = mismatch(type, eventTime ? (record as unknown[])[1] : record, null);
  const what =
    declaredBy === undefined
      ? `operator ${JSON.stringify(operator)} declared ${describeRecordType(type)}`
      : `operator ${JSON.stringify(operator)} emits its input's type ${describeRecordType(type)} (declared on ${JSON.stringify(declaredBy)})`;
  return new RecordTypeError(`${what}: ${why ?? "the record does not match"}`);
}

function mismatch(t: RecordType, v: unknown, path: string | null): string | null {
  const where = path === null ? "the record" : `field ${path}`;
  const sub = (k: string | number) => (path === null ? String(k) : `${path}.${k}`);
  const expected = describeRecordType(t, false);
  const bad = () => `${where} is ${show(v)}, expected ${expected}`;
  switch (t.type) {
    case "STRING":
      return typeof v === "string" ? null : bad();
    case "INT":
      return isInt32(v) ? null : bad();
    case "LONG":
      return typeof v === "number" && Number.isInteger(v) ? null : bad();
    case "DOUBLE":
      return typeof v === "number" ? null : bad();
    case "BOOLEAN":
      return typeof v === "boolean" ? null : bad();
    case "TUPLE":
      if (!Array.isArray(v)) return bad();
      if (v.length !== t.fields.length) return `${where} has ${v.length} fields, expected ${t.fields.length} (${expected})`;
      for (let i = 0; i < t.fields.length; i++) {
        const m = mismatch(t.fields[i]!, v[i], sub(i));
        if (m !== null) return m;
      }
      return null;
    case "ROW": {
      if (typeof v !== "object" || v === null || Array.isArray(v)) return bad();
      for (const k in v) if (!t.names.includes(k)) return `${where} has a field ${fieldName(k)} that the type does not declare (${expected})`;
      for (let i = 0; i < t.fields.length; i++) {
        const name = t.names[i]!;
        if (!(name in v)) return `field ${sub(fieldName(name))} is missing, expected ${describeRecordType(t.fields[i]!, false)}`;
        const m = mismatch(t.fields[i]!, (v as Record<string, unknown>)[name], sub(fieldName(name)));
        if (m !== null) return m;
      }
      return null;
    }
  }
}

function fieldName(k: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k);
}

function show(v: unknown): string {
  if (typeof v === "string") return v.length > 40 ? `${JSON.stringify(v.slice(0, 40))}...` : JSON.stringify(v);
  if (typeof v === "number") return Object.is(v, -0) ? "-0" : String(v);
  if (v === null || v === undefined || typeof v === "boolean" || typeof v === "bigint") return String(v);
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}
