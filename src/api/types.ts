// Record types for DataStream.returns (as Flink's Types / TypeInformation): a stream with a declared type crosses
// the network in a fixed binary layout (numbers as float64 or int32, strings as UTF-8 with a length, tuples and
// objects field by field) instead of msgpack, and a record that does not match fails its task naming the operator
// and the field. Plain data (graph/record-type.ts), so a type travels in the JobGraph.
import type { PrimitiveTypeName, RecordType } from "../graph/record-type.ts";
import { recordTypeProblem } from "../graph/record-type.ts";

/** A record type; T is the records' TypeScript type. */
export type TypeInformation<T = unknown> = RecordType & { readonly _type?: T };

type FieldsOf<F extends readonly TypeInformation<any>[]> = { [K in keyof F]: F[K] extends TypeInformation<infer X> ? X : never };

const primitive = <T>(type: PrimitiveTypeName): TypeInformation<T> => Object.freeze({ kind: "type", type }) as TypeInformation<T>;

function checked<T>(t: RecordType, what: string): TypeInformation<T> {
  const problem = recordTypeProblem(t);
  if (problem !== null) throw new Error(`${what}: ${problem}`);
  return t as TypeInformation<T>;
}

export const Types = {
  /** A string (UTF-8 with a length on the wire). */
  STRING: primitive<string>("STRING"),
  /** An int32 number (-2147483648..2147483647, not -0): 4 bytes. */
  INT: primitive<number>("INT"),
  /** An integral number (as JavaScript has it: exact up to 2^53): a float64. */
  LONG: primitive<number>("LONG"),
  /** Any number, NaN, +-Infinity and -0 included: a float64. */
  DOUBLE: primitive<number>("DOUBLE"),
  BOOLEAN: primitive<boolean>("BOOLEAN"),
  /** A fixed-length array, field i of the i-th type (as Flink's Tuple types). */
  TUPLE<F extends TypeInformation<any>[]>(...fields: F): TypeInformation<FieldsOf<F>> {
    return checked({ kind: "type", type: "TUPLE", fields: [...fields] }, "Types.TUPLE");
  },
  /** An object with exactly these fields (as Flink's POJO and named ROW types); records decode in this field order. */
  ROW<F extends Record<string, TypeInformation<any>>>(fields: F): TypeInformation<{ [K in keyof F]: F[K] extends TypeInformation<infer X> ? X : never }> {
    if (typeof fields !== "object" || fields === null || Array.isArray(fields)) throw new Error("Types.ROW: expected an object of field types, e.g. Types.ROW({ name: Types.STRING, count: Types.LONG })");
    const names = Object.keys(fields);
    return checked({ kind: "type", type: "ROW", names, fields: names.map((n) => fields[n]!) }, "Types.ROW");
  },
  /** The same as ROW. */
  OBJECT<F extends Record<string, TypeInformation<any>>>(fields: F): TypeInformation<{ [K in keyof F]: F[K] extends TypeInformation<infer X> ? X : never }> {
    return Types.ROW(fields);
  },
};

/** The type given to returns(), checked (by shape: a job bundle has its own copy of this module). */
export function checkReturnsType(t: unknown): RecordType {
  const problem = recordTypeProblem(t);
  if (problem !== null) throw new Error(`returns: ${problem}`);
  return JSON.parse(JSON.stringify(t)) as RecordType;
}
