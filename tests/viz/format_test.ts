/**
 * Numbers at the precision that tells them apart (`formatSig`), signed differences and their
 * sentences, and tables that format a column with them: every expected text written by hand.
 */
import { assertEquals, assertStringIncludes } from "@std/assert";
import { differencesText, formatSig, signedPoints } from "../../lib/viz/format.ts";
import { tableHtml, tableMarkdown } from "../../lib/viz/tables.ts";

Deno.test("formatSig: two significant digits, plain from 1e-4, whole from 100", () => {
  // The cases the notebooks showed wrongly at two fraction digits.
  assertEquals(formatSig(0.0015), "0.0015"); // shown as 0.002 (02's base lr)
  assertEquals(formatSig(0.024), "0.024"); // shown as 0.02 (04's table)
  assertEquals(formatSig(0.096), "0.096"); // shown as 0.10
  assertEquals(formatSig(0.093), "0.093"); // shown as 9.3e-2 (02's .lock KiB)
  assertEquals(formatSig(0.006), "0.006");
  // Trailing zeros dropped, the integer part never rounded away.
  assertEquals(formatSig(0.1), "0.1");
  assertEquals(formatSig(2.5), "2.5");
  assertEquals(formatSig(3), "3");
  assertEquals(formatSig(12.34), "12");
  assertEquals(formatSig(99.6), "100");
  assertEquals(formatSig(1234.5), "1235");
  assertEquals(formatSig(-0.0015), "-0.0015");
  // Below 1e-4: an exponent, without "+" or trailing zeros.
  assertEquals(formatSig(1.5e-5), "1.5e-5");
  assertEquals(formatSig(2e-5), "2e-5");
  assertEquals(formatSig(1e-4), "0.0001");
  // More digits when asked.
  assertEquals(formatSig(0.0012345, 3), "0.00123");
  // Nothing to show.
  assertEquals(formatSig(0), "0");
  assertEquals(formatSig(NaN), "");
  assertEquals(formatSig(null), "");
  assertEquals(formatSig("0.024"), "0.024");
});

Deno.test("signedPoints and differencesText: signs, two decimals, above / below / level", () => {
  assertEquals(signedPoints(1.234), "+1.23");
  assertEquals(signedPoints(-0.5), "-0.50");
  assertEquals(signedPoints(0), "0.00");
  assertEquals(
    differencesText("raw pixels", [
      { name: "kNN-20", d: 1.234 },
      { name: "linear", d: -0.5 },
      { name: "fine-tune", d: 0.001 }, // 0.00 at two decimals: level
      { name: "kNN-200", d: NaN },
    ]),
    "against raw pixels: kNN-20 +1.23 points (above), linear -0.50 points (below), " +
      "fine-tune +0.00 points (level), kNN-200 n/a",
  );
});

Deno.test("tables: a column formatted by its own function, the others by digits", () => {
  const rows = [{ baseLr: 0.024, top1: 78.456 }, { baseLr: 0.096, top1: 70.1 }];
  const opts = { digits: 2, format: { baseLr: formatSig } };
  assertEquals(tableMarkdown(rows, opts), "|baseLr|top1|\n|-:|-:|\n|0.024|78.46|\n|0.096|70.10|");
  const html = tableHtml(rows, opts);
  assertStringIncludes(html, ">0.024</td>");
  assertStringIncludes(html, ">0.096</td>");
  assertStringIncludes(html, ">78.46</td>");
});
