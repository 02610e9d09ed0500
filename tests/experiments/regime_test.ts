import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import { budgetRegime, regimeText } from "../../lib/experiments/regime.ts";

// Pilot rows: 2-epoch runs under 3 seeds (linear 78, 79, 80; kNN 80, 80, 80), a 1-epoch run, and
// random init under 3 seeds (linear 72, 72, 72; kNN 73, 74, 75).
const pilot = [
  { epochs: 2, random_init: false, linear_top1: 78, knn_top1: 80 },
  { epochs: 2, random_init: false, linear_top1: 79, knn_top1: 80 },
  { epochs: 2, random_init: false, linear_top1: 80, knn_top1: 80 },
  { epochs: 1, random_init: false, linear_top1: 50, knn_top1: 50 },
  { epochs: "", random_init: true, linear_top1: 72, knn_top1: 73 },
  { epochs: "", random_init: true, linear_top1: 72, knn_top1: 74 },
  { epochs: "", random_init: true, linear_top1: 72, knn_top1: 75 },
];

Deno.test("budgetRegime: the base configuration at the budget's length, its random init, by hand", () => {
  const r = budgetRegime(pilot, 2, { linear_top1: 84.73, knn_top1: 84.95 })!;
  // mean 79, s = 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3) = 2.4842.
  assertEquals([r.base.linear!.n, r.base.linear!.mean], [3, 79]);
  assertAlmostEquals(r.base.linear!.halfWidth, 4.302653 / Math.sqrt(3), 1e-5);
  assertEquals([r.base.knn!.mean, r.base.knn!.halfWidth], [80, 0]);
  assertEquals([r.randomInit!.linear!.mean, r.randomInit!.knn!.mean], [72, 74]);
  assertEquals(budgetRegime(pilot, 4, {}), undefined);
});

Deno.test("regimeText: below raw pixels, above random init, and the sentence that says so", () => {
  const below = regimeText(budgetRegime(pilot, 2, { linear_top1: 84.73, knn_top1: 84.95 })!);
  assertEquals(
    below,
    "regime: the base configuration (2 epochs, 3 seeds) reaches linear 79.0 ± 2.5, kNN 80.0 ± " +
      "0.0: below raw pixels (linear 84.7, kNN 85.0), above random init (72.0 ± 0.0, 74.0 ± 2.5)" +
      "; the models compared have not yet learned more than the pixels give",
  );
  // 79 ± 2.48 contains 80: level with on linear; kNN 80 ± 0 is above 79.5.
  const mixed = regimeText(budgetRegime(pilot, 2, { linear_top1: 80, knn_top1: 79.5 })!);
  assert(
    mixed.includes("level with / above raw pixels (linear 80.0, kNN 79.5; linear / kNN)"),
    mixed,
  );
  assert(!mixed.includes("learned more"), mixed);
  const above = regimeText(budgetRegime(pilot, 2, { linear_top1: 70, knn_top1: 70 })!);
  assert(above.endsWith("; the models compared have learned more than the pixels give"), above);
});
