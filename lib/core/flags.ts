/**
 * Flags from a table of fields, shared by every task and by the config check: a flag's spec
 * ({@link FlagSpec}), the check of a value against it ({@link flagProblem}, with a "did you mean"
 * for a near miss), and the parser ({@link parseFlags}) that type-checks values and suggests the
 * closest flag for an unknown or misspelled one.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./flags.ts";
 * const { values } = parseFlags(["--batch", "64"], [
 *   { key: "batchSize", flag: "batch", kind: "int", help: "images per step" },
 * ]);
 * values.batchSize; // 64
 * ```
 * @module
 */
import { parseArgs } from "@std/cli";
import { UserError } from "./errors.ts";

/**
 * A flag: where its value goes, its type, a line of help, and what values it allows. Values are
 * checked when the flag is parsed, before any work starts.
 *
 * @example
 * ```ts
 * const spec: FlagSpec = {
 *   key: "framework", flag: "framework", kind: "string", choices: ["mocov3", "simclr", "byol", "swav"],
 *   help: "self-supervised method",
 * };
 * ```
 */
export interface FlagSpec {
  key: string;
  flag: string;
  kind: "int" | "number" | "string" | "bool";
  help: string;
  /** The allowed values (of a string or number flag). */
  choices?: readonly (string | number)[];
  /** A comma-separated list of values, each one of `choices` (`--protocol knn,linear`). */
  list?: boolean;
  /** Smallest allowed value of a number flag. */
  min?: number;
  /** Whether the minimum itself is excluded (lr > 0). */
  exclusive?: boolean;
  /** Largest allowed value of a number flag. */
  max?: number;
}

/**
 * What is wrong with `value` for `spec` (type, bounds, allowed values, with a did-you-mean for a
 * near miss), or `undefined` when it is fine. Shared by the flag parser and the config check.
 *
 * @example
 * ```ts
 * flagProblem({ key: "f", flag: "framework", kind: "string", choices: ["mocov3"], help: "" },
 *   "mocov4"); // 'unknown --framework "mocov4": did you mean mocov3? (choose one of mocov3)'
 * ```
 */
export function flagProblem(spec: FlagSpec, value: unknown): string | undefined {
  const flag = `--${spec.flag}`;
  if (spec.kind === "int" || spec.kind === "number") {
    if (typeof value !== "number" || !Number.isFinite(value)) {
      return `${flag} must be a number, got "${value}"`;
    }
    if (spec.kind === "int" && !Number.isInteger(value)) {
      return `${flag} must be a whole number, got ${value}`;
    }
    if (spec.min !== undefined && (spec.exclusive ? value <= spec.min : value < spec.min)) {
      return `${flag} must be ${
        spec.exclusive ? ">" : ">="
      } ${spec.min}, got ${value} (${spec.help})`;
    }
    if (spec.max !== undefined && value > spec.max) {
      return `${flag} must be <= ${spec.max}, got ${value} (${spec.help})`;
    }
  } else if (spec.kind === "bool" && typeof value !== "boolean") {
    return `${flag} is a switch (true/false), got "${value}"`;
  }
  if (!spec.choices) return undefined;
  const items = spec.list ? String(value).split(",").map((s) => s.trim()) : [value];
  for (const item of items) {
    if (spec.choices.includes(item as string | number)) continue;
    const names = spec.choices.map(String);
    const near = suggest(String(item), names);
    return `unknown ${flag} "${item}"` + (near ? `: did you mean ${near}?` : "") +
      ` (choose ${spec.list ? "from" : "one of"} ${names.join(", ")})`;
  }
  return undefined;
}

/**
 * Bad command-line input; the message names the flag and the fix (exit code 2).
 *
 * @example
 * ```ts
 * throw new UsageError('unexpected argument "x": use --workload NAME');
 * ```
 */
export class UsageError extends UserError {
  override name = "UsageError";
}

/**
 * Levenshtein distance, for suggestions.
 *
 * @example
 * ```ts
 * editDistance("bacth", "batch"); // 2
 * ```
 */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(
        d[i - 1][j] + 1,
        d[i][j - 1] + 1,
        d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
  }
  return d[a.length][b.length];
}

/**
 * The closest known flag to `name`, if it is close enough to be a typo.
 *
 * @example
 * ```ts
 * suggest("bacth", ["batch", "epochs"]); // "batch"
 * ```
 */
export function suggest(name: string, known: string[]): string | undefined {
  let best: string | undefined, bestD = Infinity;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

/**
 * Parses `args` against `specs`. Returns the typed values by key (only those given) and the
 * positional arguments. Throws {@link UsageError} for an unknown flag (with a suggestion), a
 * missing value or a non-numeric number.
 *
 * @example
 * ```ts
 * parseFlags(["--lr", "0.5", "run1"], [{ key: "lr", flag: "lr", kind: "number", help: "" }]);
 * // { values: { lr: 0.5 }, positional: ["run1"] }
 * ```
 */
export function parseFlags(
  args: string[],
  specs: FlagSpec[],
): { values: Record<string, string | number | boolean>; positional: string[] } {
  const bools = specs.filter((s) => s.kind === "bool").map((s) => s.flag);
  const strings = specs.filter((s) => s.kind !== "bool").map((s) => s.flag);
  const known = specs.map((s) => s.flag);
  const unknown: string[] = [];
  // `--lr -1`: parseArgs would read "-1" as a short flag; join a negative number to its flag so
  // that it is parsed (and then range-checked) as the value.
  const numeric = new Set(
    specs.filter((s) => s.kind === "int" || s.kind === "number").map((s) => `--${s.flag}`),
  );
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") {
      joined.push(...args.slice(i));
      break;
    }
    if (numeric.has(args[i]) && /^-\.?\d/.test(args[i + 1] ?? "")) {
      joined.push(`${args[i]}=${args[++i]}`);
    } else {
      joined.push(args[i]);
    }
  }
  const parsed = parseArgs(joined, {
    boolean: bools,
    string: strings,
    negatable: bools,
    unknown: (arg: string) => {
      if (arg.startsWith("-")) unknown.push(arg);
      return false;
    },
  });
  if (unknown.length) {
    const name = unknown[0].replace(/^-+/, "").split("=")[0];
    const s = suggest(name, known);
    throw new UsageError(
      `unknown flag ${unknown[0]}` + (s ? `: did you mean --${s}?` : "") +
        " (run with --help to list the flags)",
    );
  }
  const values: Record<string, string | number | boolean> = {};
  for (const spec of specs) {
    const raw = (parsed as Record<string, unknown>)[spec.flag];
    if (raw === undefined) continue;
    if (spec.kind === "bool") {
      if (args.some((a) => a === `--${spec.flag}` || a === `--no-${spec.flag}`)) {
        values[spec.key] = raw as boolean;
      }
      continue;
    }
    const text = String(raw);
    if (text === "" || text === "undefined") {
      throw new UsageError(`--${spec.flag} needs a value (${spec.help})`);
    }
    if (spec.kind === "int" || spec.kind === "number") {
      const n = Number(text);
      if (!Number.isFinite(n) || text.trim() === "") {
        throw new UsageError(`--${spec.flag} must be a number, got "${text}" (${spec.help})`);
      }
      values[spec.key] = n;
    } else {
      values[spec.key] = text;
    }
    const problem = flagProblem(spec, values[spec.key]);
    if (problem) throw new UsageError(problem);
  }
  return { values, positional: parsed._.map(String) };
}
