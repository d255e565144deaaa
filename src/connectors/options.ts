// Helpers every connector shares: error text and option checks that name what was wrong.

export function errorText(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.map(errorText).join("; ");
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/** A positive integer option, or a clear error naming it. */
export function positiveIntOption(what: string, name: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) throw new Error(`${what}: option ${name} must be an integer >= 1, got ${JSON.stringify(v)}`);
  return v;
}

/** A non-empty string option, or a clear error naming it. */
export function stringOption(what: string, name: string, v: unknown, required: true): string;
export function stringOption(what: string, name: string, v: unknown, required: false): string | undefined;
export function stringOption(what: string, name: string, v: unknown, required: boolean): string | undefined {
  if (v === undefined && !required) return undefined;
  if (typeof v !== "string" || v.length === 0) throw new Error(`${what}: option ${name} must be a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

/** A promise that resolves after ms (for waits between polls of an external system). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A reader waiting for data its pump delivers: resolves after `ms`, or as soon as the pump calls the wake function
 * handed to `setWake` (which gets null again once the wait is over).
 */
export function waitForData(ms: number, setWake: (wake: (() => void) | null) => void): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      setWake(null);
      resolve();
    };
    const t = setTimeout(done, ms);
    setWake(done);
  });
}
