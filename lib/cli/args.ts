/**
 * Command-line parsing shared by every task: flags come from a table of fields, values are
 * type-checked, and an unknown or misspelled flag gets a "did you mean" suggestion.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./args.ts";
 * const { values } = parseFlags(["--batch", "64"], [
 *   { key: "batchSize", flag: "batch", kind: "int", help: "images per step" },
 * ]);
 * values.batchSize; // 64
 * ```
 * @module
 */
import { parseArgs } from "@std/cli";

/** A flag: where its value goes, its type and a line of help. */
export interface FlagSpec {
  key: string;
  flag: string;
  kind: "int" | "number" | "string" | "bool";
  help: string;
}

/** Bad command-line input; the message names the flag and the fix. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Levenshtein distance, for suggestions. */
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

/** The closest known flag to `name`, if it is close enough to be a typo. */
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
      if (spec.kind === "int" && !Number.isInteger(n)) {
        throw new UsageError(`--${spec.flag} must be a whole number, got "${text}"`);
      }
      values[spec.key] = n;
    } else {
      values[spec.key] = text;
    }
  }
  return { values, positional: parsed._.map(String) };
}

/** Help text listing every flag. */
export function helpText(title: string, specs: FlagSpec[]): string {
  const rows = specs.map((s) => {
    const arg = s.kind === "bool" ? "" : s.kind === "string" ? " TEXT" : " N";
    return `  --${s.flag}${arg}`.padEnd(30) + s.help;
  });
  return `${title}\n\nFlags:\n${rows.join("\n")}`;
}
