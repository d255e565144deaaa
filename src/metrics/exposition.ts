// Prometheus text exposition format 0.0.4, written by hand: a metric family is a name, help, type and samples.
// https://prometheus.io/docs/instrumenting/exposition_formats/
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type MetricType = "counter" | "gauge" | "summary";

export interface Sample {
  labels?: Record<string, string | number>;
  value: number;
  /** A summary's _sum and _count samples (its quantiles have none). */
  suffix?: "_sum" | "_count";
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

/** Something that yields metric families when scraped. */
export type Collector = () => MetricFamily[];

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeHelp(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** Renders families; samples of one family with equal names are merged, a family without samples is left out. */
export function renderPrometheus(families: MetricFamily[]): string {
  const merged = new Map<string, MetricFamily>();
  for (const f of families) {
    if (!NAME.test(f.name)) throw new Error(`invalid metric name ${JSON.stringify(f.name)}`);
    const prev = merged.get(f.name);
    if (prev) {
      if (prev.type !== f.type) throw new Error(`metric ${f.name} registered as ${prev.type} and ${f.type}`);
      prev.samples.push(...f.samples);
    } else merged.set(f.name, { ...f, samples: [...f.samples] });
  }
  let out = "";
  for (const f of merged.values()) {
    if (f.samples.length === 0) continue;
    out += `# HELP ${f.name} ${escapeHelp(f.help)}\n# TYPE ${f.name} ${f.type}\n`;
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      let line = f.name + (s.suffix ?? "");
      if (labels.length > 0) {
        line += "{" + labels.map(([k, v]) => {
          if (!LABEL.test(k)) throw new Error(`invalid label name ${JSON.stringify(k)} of ${f.name}`);
          return `${k}="${escapeLabelValue(String(v))}"`;
        }).join(",") + "}";
      }
      out += `${line} ${formatValue(s.value)}\n`;
    }
  }
  return out;
}

/** A set of collectors scraped together. */
export class MetricsRegistry {
  private readonly collectors: Collector[] = [];

  add(collector: Collector): this {
    this.collectors.push(collector);
    return this;
  }

  collect(): MetricFamily[] {
    return this.collectors.flatMap((c) => c());
  }

  render(): string {
    return renderPrometheus(this.collect());
  }
}

export function gauge(name: string, help: string, samples: Sample[] | number): MetricFamily {
  return { name, help, type: "gauge", samples: typeof samples === "number" ? [{ value: samples }] : samples };
}

/** A summary per label set: its quantiles (label quantile), _sum and _count. */
export function summary(name: string, help: string, series: { labels: Record<string, string | number>; quantiles: [number, number][]; sum: number; count: number }[]): MetricFamily {
  const samples: Sample[] = [];
  for (const s of series) {
    for (const [q, value] of s.quantiles) samples.push({ labels: { ...s.labels, quantile: q }, value });
    samples.push({ labels: s.labels, value: s.sum, suffix: "_sum" }, { labels: s.labels, value: s.count, suffix: "_count" });
  }
  return { name, help, type: "summary", samples };
}

export function counter(name: string, help: string, samples: Sample[] | number): MetricFamily {
  return { name, help, type: "counter", samples: typeof samples === "number" ? [{ value: samples }] : samples };
}
