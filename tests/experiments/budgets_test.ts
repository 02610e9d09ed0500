// Study budgets kept apart: cpu-long is a budget only the patch-projection suite runs, notebooks
// run only the notebook budgets, and the rows of two budgets in one results table never pair in a
// comparison, a figure or a summary section (hand-made rows, differences by hand).
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import {
  BUDGET_SPECS,
  budgetConfigs,
  BUDGETS,
  NOTEBOOK_BUDGETS,
  suitesAt,
} from "../../lib/experiments/suites.ts";
import { suiteList } from "../../lib/experiments/run.ts";
import { compareWithPaper } from "../../lib/experiments/summary.ts";
import { budgetsIn, readTable } from "../../lib/experiments/tables.ts";
import { committedSuiteTables } from "../../lib/experiments/notebook_training.ts";
import { buildFigures } from "../../lib/viz/figures/mod.ts";
import { summaryMarkdown } from "../../lib/cli/figures.ts";
import { budget as notebookBudget } from "../../lib/viz/budget.ts";

Deno.test("cpu-long: the default recipe's base, run by the patch-projection suite only", () => {
  assertEquals([...BUDGETS], ["smoke", "cpu", "cpu-long", "gpu"]);
  assertEquals(suitesAt("cpu-long"), ["patch-projection"]);
  assertEquals(suiteList("all", "cpu-long"), ["patch-projection"]);
  assertThrows(
    () => budgetConfigs("posemb", "cpu-long"),
    RangeError,
    "at cpu-long run patch-projection",
  );
  assertThrows(() => suiteList("posemb,patch-projection", "cpu-long"), RangeError, "posemb");
  const plan = budgetConfigs("patch-projection", "cpu-long");
  // 4 frameworks x 2 projections + a random init, under seeds 0, 1, 2.
  assertEquals(plan.length, 27);
  assertEquals(plan.filter((r) => r.randomInit).map((r) => r.seed), [0, 1, 2]);
  assertEquals(plan[1].config.preset, "default");
  assertEquals(BUDGET_SPECS["cpu-long"].linearEpochs, 30);
  // The cpu budget's patch-projection plan is unchanged: no random init there.
  assertEquals(budgetConfigs("patch-projection", "cpu").filter((r) => r.randomInit).length, 0);
  // Notebooks run at the notebook budgets only.
  assertEquals([...NOTEBOOK_BUDGETS], ["smoke", "cpu", "gpu"]);
  assertThrows(() => notebookBudget("cpu-long"), Error, "expected one of smoke, cpu, gpu");
});

/** patch-projection rows: MoCo v3 learned / frozen per seed at a budget. */
function rows(budget: string, learned: number[], frozen: number[]): string[] {
  return [false, true].flatMap((f) =>
    (f ? frozen : learned).map((acc, seed) =>
      [
        "patch-projection",
        `patch-projection_${budget}_framework-mocov3_freezePatchEmbed-${f}_seed-${seed}`,
        budget,
        "mocov3",
        f,
        seed,
        false,
        false,
        acc,
        acc + 1,
      ].join(",")
    )
  );
}

Deno.test("two budgets in one table: comparisons, figures and summary sections stay apart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-budgets-" });
  try {
    const header =
      "suite,run_id,budget,framework,freezePatchEmbed,seed,random_init,diverged,linear_top1,knn_top1";
    await Deno.writeTextFile(
      `${dir}/patch-projection.csv`,
      [
        header,
        // cpu: random - learned = 1, 1, 1.5 (mean 7/6); cpu-long: -1, -1, -1.
        ...rows("cpu", [70, 71, 72], [71, 72, 73.5]),
        ...rows("cpu-long", [85, 86, 87], [84, 85, 86]),
      ].join("\n") + "\n",
    );
    const tables = [
      await readTable(`${dir}/pilot.csv`),
      await readTable(`${dir}/patch-projection.csv`),
    ];
    assertEquals(budgetsIn(tables, BUDGETS), ["cpu", "cpu-long"]);
    const effect = async (b: string) =>
      (await compareWithPaper(dir, "linear_top1", b)).find((c) =>
        c.effect === "random - learned, mocov3"
      )!;
    const cpu = await effect("cpu"), long = await effect("cpu-long");
    assertEquals(cpu.seeds, [0, 1, 2]);
    assertAlmostEquals(cpu.diff!.mean, 7 / 6, 1e-9);
    assertEquals([long.diff!.mean, long.diff!.halfWidth], [-1, 0]);
    // One set of figures per budget.
    const figs = await buildFigures(dir, { budget: "cpu-long" });
    assert(figs["patch-projection"], "a cpu-long patch-projection figure");
    const text = JSON.stringify(figs["patch-projection"]);
    assert(text.includes("budget cpu-long") && !text.includes("budget cpu:"), "its note");
    const md = await summaryMarkdown(dir, {});
    const iLong = md.indexOf("## Linear probe top-1 (the paper's metric), budget cpu-long");
    const iCpu = md.indexOf("## Linear probe top-1 (the paper's metric), budget cpu\n");
    assert(iCpu > 0 && iLong > iCpu, md);
    // 7/6 ± 4.3027 * 0.2887 / sqrt(3) = [0.45, 1.88]; cpu-long: -1 exactly.
    assert(md.slice(iCpu, iLong).includes("+1.2 [+0.4, +1.9]"), md.slice(iCpu, iLong));
    assert(md.slice(iLong).includes("-1.0 [-1.0, -1.0]"), md.slice(iLong));
    // The committed rows of a budget part way, without training.
    const t = await committedSuiteTables("patch-projection", "cpu-long", dir);
    assertEquals([t.results.numRows(), t.planned], [6, 27]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
