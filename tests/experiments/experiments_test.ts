import { assert, assertEquals, assertRejects } from "@std/assert";
import { main } from "../../lib/cli/experiments.ts";
import { main as figuresMain } from "../../lib/cli/figures.ts";
import { readTable } from "../../lib/experiments/tables.ts";
import { budgetConfigs, product, SUITE_NAMES, SUITES } from "../../lib/experiments/suites.ts";
import { buildFigures } from "../../lib/viz/figures.ts";
import { compareWithPaper } from "../../lib/experiments/summary.ts";

const REQUIRED = [
  "suite",
  "run_id",
  "budget",
  "knn_top1",
  "knn_top5",
  "params",
  "flops",
  "seconds",
  "backend",
  "dips",
  "date",
];

Deno.test("product: every combination, last field fastest", () => {
  assertEquals(product({ batchSize: [1, 2], baseLr: [0.1, 0.2] }), [
    { batchSize: 1, baseLr: 0.1 },
    { batchSize: 1, baseLr: 0.2 },
    { batchSize: 2, baseLr: 0.1 },
    { batchSize: 2, baseLr: 0.2 },
  ]);
});

Deno.test("budgetConfigs: the same images per run, monitors at the same images seen", () => {
  const runs = budgetConfigs("stability", "cpu");
  for (const r of runs) {
    const b = r.config.batchSize!;
    assertEquals(r.config.maxSteps, Math.ceil(10240 / b));
    assertEquals(r.config.knnEvery, Math.round(768 / b));
  }
  assertEquals(runs.length, 4);
  assertEquals(runs[0].runId, "stability_cpu_batchSize-64_baseLr-0.0015");
  assertEquals(new Set(runs.map((r) => r.runId)).size, runs.length, "run ids are unique");
});

Deno.test({
  name: "experiments --suite all --budget smoke: tables, skip on re-run, figures",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "vitssl-exp-" });
    const results = `${tmp}/results`;
    const runs = `${tmp}/runs`;
    const args = [
      "--suite",
      "all",
      "--budget",
      "smoke",
      "--backend",
      "wasm",
      "--results-dir",
      results,
      "--runs-dir",
      runs,
    ];
    try {
      const t0 = performance.now();
      assertEquals(await main(args), 0);
      const first = (performance.now() - t0) / 1000;

      for (const name of SUITE_NAMES) {
        const t = await readTable(`${results}/${name}.csv`);
        const suite = SUITES[name];
        assertEquals(t.numRows(), suite.grid.smoke.length, `${name}: one row per run`);
        for (const c of [...REQUIRED, ...suite.fields]) {
          assert(t.columnNames().includes(c), `${name}.csv lacks column ${c}`);
        }
        const rows = t.objects() as Record<string, unknown>[];
        // The varied fields hold the grid's values, in grid order.
        suite.grid.smoke.forEach((variant, i) => {
          for (const [k, v] of Object.entries(variant)) assertEquals(rows[i][k], v, `${name} ${k}`);
        });
        for (const r of rows) {
          const top1 = r.knn_top1 as number;
          assert(top1 >= 0 && top1 <= 100, `${name}: top-1 ${top1}`);
          assert((r.knn_top5 as number) >= top1);
          assertEquals(r.budget, "smoke");
        }
        const curves = await readTable(`${results}/${name}.curves.csv`);
        assert(curves.numRows() > 0, `${name}: curves recorded`);
      }

      // Smoke = the smoke preset: vit_nano (D 32, depth 2, MLP 128) on 28x28x1, patch 7.
      const posemb = (await readTable(`${results}/posemb.csv`)).objects() as Record<
        string,
        number
      >[];
      const D = 32, N = 16, T = 17, H = 128;
      const flops = 2 * N * 49 * D +
        2 * (2 * T * D * 3 * D + 4 * T * T * D + 2 * T * D * D + 4 * T * D * H);
      assertEquals(posemb[0].flops, flops);
      // cls + patch (w, b) + 2 blocks (2 LNs, qkv, proj, fc1, fc2) + final LN; sin-cos excluded.
      const block = 4 * D + (3 * D * D + 3 * D) + (D * D + D) + (D * H + H) + (H * D + D);
      const params = D + (49 * D + D) + 2 * block + 2 * D;
      assertEquals(posemb[0].params, params);
      assertEquals(posemb[1].params, params + (N + 1) * D, "learned position embedding counts");
      assertEquals(posemb[0].steps, 3); // 96 images at batch 32

      const stab = (await readTable(`${results}/stability.csv`)).objects() as Record<
        string,
        number
      >[];
      assertEquals(stab.map((r) => r.steps), [6, 6, 3, 3]); // batch 16, 16, 32, 32

      // Second run: everything is complete, so nothing trains and no row is added.
      const t1 = performance.now();
      assertEquals(await main(args), 0);
      const second = (performance.now() - t1) / 1000;
      assert(second < first / 2, `re-run took ${second.toFixed(1)} s vs ${first.toFixed(1)} s`);
      for (const name of SUITE_NAMES) {
        const t = await readTable(`${results}/${name}.csv`);
        assertEquals(t.numRows(), SUITES[name].grid.smoke.length, `${name}: no duplicate rows`);
      }
      const times = (await readTable(`${results}/suite_times.csv`)).objects() as Record<
        string,
        number
      >[];
      assertEquals(times.length, 2 * SUITE_NAMES.length);
      for (const t of times.slice(SUITE_NAMES.length)) assertEquals(t.ran, 0);

      // A complete run whose saved config no longer matches the plan is refused, not reused.
      const edited = `${runs}/optimizer_smoke_optimizer-adamw_baseLr-0.0015_weightDecay-0.1`;
      const saved = JSON.parse(await Deno.readTextFile(`${edited}/config.json`));
      saved.config.maxSteps = 99;
      await Deno.writeTextFile(`${edited}/config.json`, JSON.stringify(saved));
      await assertRejects(
        () => main(["--suite", "optimizer", ...args.slice(2)]),
        Error,
        "maxSteps: run has 99, plan has 3",
      );

      const figs = await buildFigures(results);
      assertEquals(Object.keys(figs).sort(), [
        "optimizer",
        "patch-projection",
        "patch-size",
        "posemb",
        "scaling",
        "stability-curves",
        "stability-gradients",
      ]);
      assertEquals(
        await figuresMain(["--results-dir", results, "--out", `${tmp}/fig`, "--no-png"]),
        0,
      );
      const html = await Deno.readTextFile(`${tmp}/fig/posemb.html`);
      assert(html.includes("Plotly.newPlot") && html.includes("paper (ImageNet)"));
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test("compareWithPaper: differences, binomial errors and verdicts", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rows = [["sincos", "cls", 75], ["learned", "cls", 74], ["none", "cls", 70], [
      "sincos",
      "mean",
      80,
    ]];
    await Deno.writeTextFile(
      `${dir}/posemb.csv`,
      "suite,run_id,budget,posEmb,pool,knn_top1,knn_test_size\n" +
        rows.map(([pe, pool, acc], i) => `posemb,r${i},cpu,${pe},${pool},${acc},2000`).join("\n") +
        "\n",
    );
    const cmp = await compareWithPaper(dir);
    const by = Object.fromEntries(cmp.map((c) => [c.effect, c]));
    const se = (p: number) => Math.sqrt(p * (1 - p) / 2000) * 100;
    assertEquals(by["sin-cos - none"].ours, 5);
    assert(Math.abs(by["sin-cos - none"].se - Math.hypot(se(0.75), se(0.7))) < 1e-9);
    assertEquals(by["sin-cos - none"].verdict, "same direction"); // paper +1.6
    assertEquals(by["sin-cos - learned"].verdict, "within noise"); // +1 < 2 x 1.4
    assertEquals(by["cls token - mean pool"].ours, -5);
    assertEquals(by["cls token - mean pool"].verdict, "opposite"); // paper +0.2
    assertEquals(cmp.length, 3, "only the posemb table exists");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
