/**
 * Numbers as text at the precision that tells them apart: {@link formatSig} keeps significant
 * digits (0.0015, 0.024 and 0.096 stay distinct, where two fraction digits show 0.00, 0.02 and
 * 0.10) and never writes a small number in exponent form unless it is below 1e-4.
 *
 * @example
 * ```ts
 * import { formatSig } from "./format.ts";
 * formatSig(0.0015); // "0.0015"
 * await showTable(rows, { format: { baseLr: formatSig } });
 * ```
 * @module
 */

/**
 * A number with `digits` significant digits (default 2), trailing zeros dropped: plain decimals
 * from 1e-4 up, an exponent below (`1.5e-5`), whole numbers from 10^digits up (never rounding
 * the integer part away: 1234.5 is `1235`). Not a finite number: an empty string.
 *
 * @example
 * ```ts
 * formatSig(0.0015); // "0.0015"
 * formatSig(0.096); // "0.096"
 * formatSig(1234.5); // "1235"
 * formatSig(1.5e-5); // "1.5e-5"
 * ```
 */
export function formatSig(value: unknown, digits = 2): string {
  const x = typeof value === "number" ? value : Number(value);
  if (value === null || value === undefined || value === "" || !Number.isFinite(x)) return "";
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a < 1e-4) return x.toExponential(digits - 1).replace(/\.?0+e/, "e").replace("e+", "e");
  if (a >= 10 ** digits) return String(Math.round(x));
  const text = x.toPrecision(digits);
  if (text.includes("e")) return String(Math.round(x)); // 99.6 rounds to 1.0e+2
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

/**
 * A difference in accuracy points with its sign and two decimals.
 *
 * @example
 * ```ts
 * signedPoints(1.234); // "+1.23"
 * signedPoints(-0.5); // "-0.50"
 * ```
 */
export function signedPoints(d: number): string {
  return Number.isFinite(d) ? (d > 0 ? "+" : "") + d.toFixed(2) : "n/a";
}

/** One difference of {@link differencesText}: the protocol's name and a - b in points. */
export interface Difference {
  name: string;
  d: number;
}

/**
 * A sentence of differences against a baseline, each signed and said as above, below or level
 * (at two decimals), computed from the numbers only.
 *
 * @example
 * ```ts
 * differencesText("raw pixels", [{ name: "kNN-20", d: 1.234 }, { name: "linear", d: -0.5 }]);
 * // "against raw pixels: kNN-20 +1.23 points (above), linear -0.50 points (below)"
 * ```
 */
export function differencesText(against: string, diffs: Difference[]): string {
  const side = (d: number) => {
    if (!Number.isFinite(d)) return "not measured";
    const r = Number(d.toFixed(2));
    return r > 0 ? "above" : r < 0 ? "below" : "level";
  };
  const parts = diffs.map((x) =>
    Number.isFinite(x.d) ? `${x.name} ${signedPoints(x.d)} points (${side(x.d)})` : `${x.name} n/a`
  );
  return `against ${against}: ${parts.join(", ")}`;
}
