// The median the benchmark scripts report: the middle of the sorted values (of an even count, the upper of the two
// middle ones), so that every figure is a value some run measured.

export function median(xs: number[]): number {
  if (xs.length === 0) throw new Error("median of no values");
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}
