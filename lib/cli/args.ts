/**
 * The command line's help text: every flag of a task, its argument and its allowed values. The
 * flags themselves are parsed by lib/core/flags.ts.
 *
 * @example
 * ```ts
 * import { helpText } from "./args.ts";
 * console.log(helpText("deno task bench [flags]", [
 *   { key: "json", flag: "json", kind: "bool", help: "one JSON line per workload" },
 * ]));
 * ```
 * @module
 */
import type { FlagSpec } from "../core/flags.ts";

/**
 * Help text listing every flag.
 *
 * @example
 * ```ts
 * helpText("deno task eval [flags]", specs); // "deno task eval [flags]\n\nFlags:\n  --..."
 * ```
 */
export function helpText(title: string, specs: FlagSpec[]): string {
  const rows = specs.map((s) => {
    const arg = s.kind === "bool" ? "" : s.kind === "string" ? " TEXT" : " N";
    const allowed = s.choices ? ` (${s.list ? "from" : "one of"}: ${s.choices.join(", ")})` : "";
    return `  --${s.flag}${arg}`.padEnd(30) + s.help + allowed;
  });
  return `${title}\n\nFlags:\n${rows.join("\n")}`;
}
