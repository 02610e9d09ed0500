/**
 * A stop request during an experiment run's final evaluation (issue 21, item 3): the evaluation
 * (feature extraction, kNN, linear probe) stops at its next batch, the run records no result and
 * the suite is incomplete; the same call again evaluates the trained run without training it
 * again and records its row.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { runSuite } from "../../lib/experiments/run.ts";
import { budgetConfigs } from "../../lib/experiments/suites.ts";
import { readTable } from "../../lib/experiments/tables.ts";
import { logSteps } from "../_helpers/pretrain_child.ts";
import { pathExists } from "../../lib/io/exists.ts";

Deno.test("experiments: a stop during a run's final evaluation records nothing; a re-run evaluates it without retraining", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "vitssl-exp-stop-" });
  const opts = { resultsDir: `${tmp}/results`, runsDir: `${tmp}/runs`, backend: "wasm" as const };
  const first = budgetConfigs("posemb", "smoke")[0].runId;
  const dir = `${tmp}/runs/${first}`;
  try {
    // Stop as soon as training has ended (pretrain's last line): inside the final evaluation.
    const signal = { stop: false };
    const lines: string[] = [];
    const print = (line: string) => {
      lines.push(line);
      if (line.includes("run directory:")) signal.stop = true;
    };
    const a = await runSuite("posemb", "smoke", { ...opts, signal, print });
    assertEquals(a.complete, false);
    assertEquals(a.rows, []);
    assertStringIncludes(
      lines.join("\n"),
      "stopped during feature extraction (train split, 0/96 images); its training is " +
        "checkpointed, the evaluation runs again on a re-run",
    );
    assertEquals(await pathExists(`${dir}/result.json`), false);
    assertEquals(await pathExists(`${tmp}/results/posemb.csv`), false);
    assertEquals(await logSteps(`${dir}/log.csv`), [0, 1, 2]);

    // Again, no stop: the run is resumed at its last step (no training) and evaluated.
    const again: string[] = [];
    const b = await runSuite("posemb", "smoke", { ...opts, print: (l) => again.push(l) });
    assert(b.complete);
    assertStringIncludes(again.join("\n"), `resumed ${dir} at step 3/3`);
    assertEquals(await logSteps(`${dir}/log.csv`), [0, 1, 2]);
    const rows = (await readTable(`${tmp}/results/posemb.csv`)).objects() as Record<
      string,
      unknown
    >[];
    assertEquals(rows[0].run_id, first);
    assertEquals(rows[0].steps, 3);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});
