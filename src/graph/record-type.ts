// A stream's record type (as Flink's TypeInformation), declared with DataStream.returns(Types...) or inferred from
// the first records: plain data, so it travels in the JobGraph and the task deployment. The network serializes the
// records of a typed edge in a fixed binary layout (src/network/typed-serialization.ts) instead of msgpack.

export type PrimitiveTypeName = "STRING" | "INT" | "LONG" | "DOUBLE" | "BOOLEAN";

export type RecordType =
  /** STRING: a string; INT: an int32 number; LONG: an integral number; DOUBLE: any number; BOOLEAN: true or false. */
  | { kind: "type"; type: PrimitiveTypeName }
  /** A fixed-length array, field i of type fields[i]. */
  | { kind: "type"; type: "TUPLE"; fields: RecordType[] }
  /** An object with exactly the fields names[i] of type fields[i]. */
  | { kind: "type"; type: "ROW"; names: string[]; fields: RecordType[] };

const PRIMITIVES: readonly string[] = ["STRING", "INT", "LONG", "DOUBLE", "BOOLEAN"];

/** The type as job code writes it: Types.TUPLE(STRING, INT), Types.ROW({name: STRING, n: LONG}). */
export function describeRecordType(t: RecordType, top = true): string {
  const inner =
    t.type === "TUPLE"
      ? `TUPLE(${t.fields.map((f) => describeRecordType(f, false)).join(", ")})`
      : t.type === "ROW"
        ? `ROW({${t.names.map((n, i) => `${/^[A-Za-z_$][\w$]*$/.test(n) ? n : JSON.stringify(n)}: ${describeRecordType(t.fields[i]!, false)}`).join(", ")}})`
        : t.type;
  return top ? `Types.${inner}` : inner;
}

/** Why x is not a RecordType (a message naming where), or null when it is one. Nesting is limited to 16 levels. */
export function recordTypeProblem(x: unknown, where = "the type", depth = 0): string | null {
  if (typeof x !== "object" || x === null || (x as { kind?: unknown }).kind !== "type") return `${where} is not a type from Types (e.g. Types.STRING, Types.TUPLE(...))`;
  if (depth > 16) return `${where} nests more than 16 levels`;
  const t = x as { type?: unknown; fields?: unknown; names?: unknown };
  if (typeof t.type === "string" && PRIMITIVES.includes(t.type)) return null;
  if (t.type !== "TUPLE" && t.type !== "ROW") return `${where} has an unknown type ${JSON.stringify(t.type)}`;
  if (!Array.isArray(t.fields) || t.fields.length === 0 || t.fields.length > 1024) return `${where}: a ${t.type} needs 1 to 1024 fields`;
  if (t.type === "ROW") {
    if (!Array.isArray(t.names) || t.names.length !== t.fields.length) return `${where}: a ROW needs one name per field`;
    const seen = new Set<string>();
    for (const n of t.names) {
      if (typeof n !== "string" || n.length === 0) return `${where}: a ROW field name must be a non-empty string`;
      if (n === "__proto__") return `${where}: a ROW field may not be named __proto__`;
      if (seen.has(n)) return `${where}: the ROW field ${JSON.stringify(n)} is given twice`;
      seen.add(n);
    }
  }
  for (let i = 0; i < t.fields.length; i++) {
    const p = recordTypeProblem(t.fields[i], `${where}, field ${t.type === "ROW" ? JSON.stringify((t.names as string[])[i]) : i}`, depth + 1);
    if (p !== null) return p;
  }
  return null;
}

/**
 * The type's compact signature, the layout id that typed chunks carry: s, i, l, d, b for the primitives, (...) for a
 * tuple, {"name"t...} for a row (names as JSON strings), and @t for a record with its event timestamp ([ts|null, t]).
 */
export function signatureOf(t: RecordType): string {
  switch (t.type) {
    case "STRING":
      return "s";
    case "INT":
      return "i";
    case "LONG":
      return "l";
    case "DOUBLE":
      return "d";
    case "BOOLEAN":
      return "b";
    case "TUPLE":
      return `(${t.fields.map(signatureOf).join("")})`;
    case "ROW":
      return `{${t.names.map((n, i) => JSON.stringify(n) + signatureOf(t.fields[i]!)).join("")}}`;
  }
}
