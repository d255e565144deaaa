// The line format of every text sink (print, writeAsText, the file sink).

/** How sinks print a record: tuples (arrays) as (a,b) like Flink, objects as JSON. */
export function formatRecord(r: unknown): string {
  if (Array.isArray(r)) return `(${r.map((x) => (typeof x === "object" && x !== null ? JSON.stringify(x) : String(x))).join(",")})`;
  if (typeof r === "object" && r !== null) return JSON.stringify(r);
  return String(r);
}
