// A strict parser of the Prometheus text exposition format 0.0.4, for tests: HELP and TYPE before a family's
// samples, each family contiguous and declared once, label syntax and escapes, numeric values, no duplicate series.
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface PromFamily {
  name: string;
  type: string;
  help: string;
  samples: PromSample[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

export function parsePrometheus(text: string): Map<string, PromFamily> {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const families = new Map<string, PromFamily>();
  const series = new Set<string>();
  let current: string | null = null;
  const lines = text.split("\n").slice(0, -1);
  lines.forEach((line, i) => {
    const at = `line ${i + 1} ${JSON.stringify(line)}`;
    if (line.startsWith("#")) {
      const m = new RegExp(`^# (HELP|TYPE) (${NAME}) (.*)$`).exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      let f = families.get(name);
      if (f && f.samples.length > 0) throw new Error(`${at}: ${kind} after samples of ${name}`);
      if (!f) {
        if (current !== null && current !== name && families.get(current)!.samples.length === 0) {
          // HELP/TYPE of another family while the current one has no samples yet is allowed but unusual
        }
        f = { name, type: "untyped", help: "", samples: [] };
        families.set(name, f);
      }
      if (kind === "TYPE") {
        if (!TYPES.has(rest)) throw new Error(`${at}: unknown type ${rest}`);
        if (f.type !== "untyped") throw new Error(`${at}: second TYPE for ${name}`);
        f.type = rest;
      } else f.help = rest;
      current = name;
      return;
    }
    if (line.trim() === "") throw new Error(`${at}: empty line`);
    const m = new RegExp(`^(${NAME})(\\{(.*)\\})? (\\S+)( -?\\d+)?$`).exec(line);
    if (!m) throw new Error(`${at}: not a sample line`);
    const name = m[1]!;
    const labels: Record<string, string> = {};
    if (m[3] !== undefined && m[3] !== "") {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/y;
      let pos = 0;
      while (pos < m[3].length) {
        re.lastIndex = pos;
        const l = re.exec(m[3]);
        if (!l) throw new Error(`${at}: bad labels at ${JSON.stringify(m[3].slice(pos))}`);
        if (l[1]! in labels) throw new Error(`${at}: label ${l[1]} twice`);
        labels[l[1]!] = l[2]!.replace(/\\(["\\n])/g, (_, c) => (c === "n" ? "\n" : c));
        pos = re.lastIndex;
      }
    }
    const raw = m[4]!;
    const value = raw === "NaN" ? NaN : raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
    if (raw !== "NaN" && Number.isNaN(value)) throw new Error(`${at}: value ${raw} is not a number`);
    // A summary's or histogram's _sum, _count (and _bucket) samples belong to its family.
    const base = /^(.*)_(sum|count|bucket)$/.exec(name)?.[1];
    const f = families.get(name) ?? (base !== undefined && ["summary", "histogram"].includes(families.get(base)?.type ?? "") ? families.get(base) : undefined);
    if (!f) throw new Error(`${at}: sample of ${name} without TYPE/HELP`);
    if (current !== f.name) throw new Error(`${at}: samples of ${name} are not contiguous`);
    if (f.type === "summary" && name === f.name && labels.quantile === undefined) throw new Error(`${at}: a summary's sample without a quantile label`);
    const key = name + JSON.stringify(Object.entries(labels).sort());
    if (series.has(key)) throw new Error(`${at}: duplicate series`);
    series.add(key);
    f.samples.push({ name, labels, value });
  });
  return families;
}

/** The value of the one sample of `name` whose labels include `match`. */
export function sampleValue(families: Map<string, PromFamily>, name: string, match: Record<string, string> = {}): number | undefined {
  const s = families.get(name)?.samples.filter((x) => Object.entries(match).every(([k, v]) => x.labels[k] === v)) ?? [];
  if (s.length > 1) throw new Error(`${s.length} samples of ${name} match ${JSON.stringify(match)}`);
  return s[0]?.value;
}
