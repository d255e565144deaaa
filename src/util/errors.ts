// Errors that more than one layer raises and the CLI maps to an exit code.

/** A port could not be bound (in use, or not permitted); main.ts exits with code 3. */
export class BindError extends Error {
  override name = "BindError";
  readonly exitCode = 3;
}
