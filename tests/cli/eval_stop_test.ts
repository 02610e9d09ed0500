/**
 * Ctrl-C and SIGTERM during `deno task eval` (issue 21, item 3): the linear probe and fine-tuning
 * are loops of synchronous tfjs steps; before the fix a signal was not even seen until the
 * protocol ended. Now the first signal stops the protocol between two steps within a few seconds,
 * with one line naming where it stopped, exit code 130; the rows of the protocols that finished
 * before it are in the results file and the stopped protocol added none.
 *
 * The child runs `lib/cli/eval.ts` in a temp directory (its feature cache goes there) on a
 * vit_nano backbone at random init and the synthetic set (5,000 train / 1,000 test images).
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { collectOutput } from "../_helpers/child_output.ts";
import { initBackend } from "../../lib/backends/mod.ts";
import { createViT, disposeViT } from "../../lib/model/vit.ts";
import { saveBackbone } from "../../lib/train/checkpoint.ts";
import { readTable } from "../../lib/experiments/tables.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const CLI = new URL("../../lib/cli/eval.ts", import.meta.url).pathname;
/** How long a stopped protocol may take to end: a step, the clean-up and the exit. */
const STOP_MS = 5000;

/** Runs the eval CLI with `args` in `dir`, sends `sig` a second after `marker` is printed. */
async function stopEval(dir: string, args: string[], marker: string, sig: "SIGINT" | "SIGTERM") {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", "--config", `${ROOT}/deno.json`, CLI, ...args],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = collectOutput(child);
  if (!(await out.seen(marker))) {
    const { stdout, stderr } = await out.all();
    throw new Error(`the output never showed "${marker}":\n${stdout}\n${stderr}`);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const t0 = performance.now();
  child.kill(sig);
  const status = await child.status;
  return { ...(await out.all()), code: status.code, ms: performance.now() - t0 };
}

Deno.test("eval: SIGINT stops the linear probe, SIGTERM fine-tuning, within seconds (exit 130, rows before kept)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl_eval_stop_" });
  try {
    await initBackend({ backend: "wasm" });
    const model = createViT(
      { name: "vit_nano", imageSize: 28, patchSize: 7, channels: 1, dim: 16, depth: 1, heads: 2 },
      3,
    );
    await saveBackbone(`${dir}/backbone.safetensors`, model);
    disposeViT(model);
    const results = `${dir}/eval.csv`;
    const common = [
      "--checkpoint",
      `${dir}/backbone.safetensors`,
      "--dataset",
      "synthetic",
      "--backend",
      "wasm",
      "--results",
      results,
    ];

    // kNN completes, then the linear probe (2000 epochs: minutes) is stopped by SIGINT.
    const a = await stopEval(
      dir,
      [...common, "--protocol", "knn,linear", "--k", "20", "--linear-epochs", "2000"],
      "linear probe, 2000 epochs...",
      "SIGINT",
    );
    assert(a.ms < STOP_MS, `SIGINT: the process ended ${a.ms.toFixed(0)} ms after the signal`);
    assertEquals(a.code, 130, `SIGINT: exit code\n${a.stdout}\n${a.stderr}`);
    assertStringIncludes(a.stderr, "stopping after this batch (press Ctrl-C again");
    assertStringIncludes(a.stderr, "stopped during the linear probe (epoch ");
    assertStringIncludes(
      a.stderr,
      `the rows of the protocols that finished before it are in ${results}, the stopped one ` +
        "wrote nothing",
    );
    assert(!a.stdout.includes("results appended"), a.stdout);
    const protocols = () => readTable(results).then((t) => t.array("protocol") as string[]);
    assertEquals(await protocols(), ["knn-20"]);

    // Fine-tuning (200 epochs) stopped by SIGTERM: the hint names SIGTERM.
    const b = await stopEval(
      dir,
      [...common, "--protocol", "finetune", "--ft-epochs", "200"],
      "fine-tuning, 200 epochs on 5000 images...",
      "SIGTERM",
    );
    assert(b.ms < STOP_MS, `SIGTERM: the process ended ${b.ms.toFixed(0)} ms after the signal`);
    assertEquals(b.code, 130, `SIGTERM: exit code\n${b.stdout}\n${b.stderr}`);
    assertStringIncludes(
      b.stderr,
      "stopping after this batch (SIGTERM received; send SIGTERM again or press Ctrl-C",
    );
    assertStringIncludes(b.stderr, "stopped during fine-tuning (epoch ");
    assertEquals(await protocols(), ["knn-20"]);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
