// A Bloom filter of the rows written to the SQLite backend's kv table since it was last empty. A cache miss whose row
// the filter has never seen needs no SELECT: it is known absent. That is every first sight of a new key or user key,
// which a job that keeps meeting new ones (distinct bidders and auctions in Nexmark q16) pays on most records: there,
// a fifth of the task's time went to SELECTs that found nothing (docs/benchmarks.md, issue 18).
//
// Scalable, as Almeida et al.'s: when the newest filter holds its capacity of rows, a new one of twice the capacity
// takes the next rows, and a lookup asks each (a handful: capacities double from 64 K rows). 12 bits and 8 probes per
// row: about 0.3 % false positives per filter, each costing only the SELECT it would have cost anyway. A row is never
// taken out (a deleted row stays a possible one); `clear` starts over when the table is emptied.

const FIRST_CAPACITY = 1 << 16;
const BITS_PER_ROW = 12;
const PROBES = 8;

interface Filter {
  bits: Uint32Array;
  /** Bit index mask: the bit count is a power of two. */
  mask: number;
  rows: number;
  capacity: number;
}

// The two hashes of the last hashed row (double hashing: probe i is h1 + i * h2).
let h1 = 0;
let h2 = 0;

function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** FNV-1a and a multiply-xorshift over (key group, state, key bytes, a separator, user key bytes). */
function hashRow(kg: number, state: number, k: Uint8Array, uk: Uint8Array): void {
  let a = Math.imul(0x811c9dc5 ^ kg, 0x01000193);
  let b = Math.imul(0x9747b28c ^ state, 0x5bd1e995);
  for (let i = 0; i < k.length; i++) {
    a = Math.imul(a ^ k[i]!, 0x01000193);
    b = Math.imul(b ^ k[i]!, 0x5bd1e995);
    b ^= b >>> 15;
  }
  // The key's length separates it from the user key: ("ab", "c") and ("a", "bc") hash apart.
  a = Math.imul(a ^ (k.length | 0x100), 0x01000193);
  b = Math.imul(b ^ k.length, 0x5bd1e995);
  for (let i = 0; i < uk.length; i++) {
    a = Math.imul(a ^ uk[i]!, 0x01000193);
    b = Math.imul(b ^ uk[i]!, 0x5bd1e995);
    b ^= b >>> 15;
  }
  h1 = mix(a);
  h2 = mix(b) | 1; // odd: the probes of one row never repeat a bit
}

function newFilter(capacity: number): Filter {
  let bitCount = 32;
  while (bitCount < capacity * BITS_PER_ROW) bitCount *= 2;
  return { bits: new Uint32Array(bitCount >>> 5), mask: bitCount - 1, rows: 0, capacity };
}

function has(f: Filter): boolean {
  const { bits, mask } = f;
  for (let i = 0; i < PROBES; i++) {
    const bit = (h1 + Math.imul(i, h2)) & mask;
    if ((bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
  }
  return true;
}

export class RowFilter {
  private filters: Filter[] = [newFilter(FIRST_CAPACITY)];
  /** Lookups answered "absent" (each a SELECT saved). */
  skipped = 0;

  /** Notes a row written to the table. */
  add(kg: number, state: number, k: Uint8Array, uk: Uint8Array): void {
    hashRow(kg, state, k, uk);
    let f = this.filters[this.filters.length - 1]!;
    if (has(f)) return; // there already (or indistinguishable): counting it again would only fill the filter
    if (f.rows >= f.capacity) this.filters.push((f = newFilter(f.capacity * 2)));
    const { bits, mask } = f;
    for (let i = 0; i < PROBES; i++) {
      const bit = (h1 + Math.imul(i, h2)) & mask;
      bits[bit >>> 5]! |= 1 << (bit & 31);
    }
    f.rows++;
  }

  /** False: the row was never written (since the last clear). True: it may have been. */
  mayContain(kg: number, state: number, k: Uint8Array, uk: Uint8Array): boolean {
    hashRow(kg, state, k, uk);
    for (let j = this.filters.length - 1; j >= 0; j--) if (has(this.filters[j]!)) return true;
    this.skipped++;
    return false;
  }

  /** The table was emptied. */
  clear(): void {
    this.filters = [newFilter(FIRST_CAPACITY)];
  }

  /** Bytes of the bit arrays (for the state metrics' memory figures). */
  get bytes(): number {
    let n = 0;
    for (const f of this.filters) n += f.bits.byteLength;
    return n;
  }
}
