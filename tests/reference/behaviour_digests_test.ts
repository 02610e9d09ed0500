/**
 * The behaviour digests of `behaviour_digests.json` (made by `run_digest.ts` on the code before
 * the restructuring), recomputed: each reference run whose `checked` names this file runs again
 * with today's `lib/cli/pretrain.ts` (its `args`, in a child process with its own backend), and its
 * digests (`log.csv` without timings, `knn.csv`, every backbone tensor's bytes) must equal the
 * recorded ones bit for bit. Checked here: smoke-wasm (about 5 s), steps6-wasm (about 20 s) and
 * smoke-cpu (about 50 s). steps6-cpu takes about 10 minutes on the pure-JS cpu backend and is
 * checked by hand: `deno run -A tests/reference/run_digest.ts --check steps6-cpu`.
 *
 * The comparison can fail: a run with another learning rate differs in its log and in every
 * trained tensor (not in the fixed sin-cos table), and a one-bit change of one tensor's bytes, or
 * of one loss digit, shows in that field alone.
 */
import { assert, assertEquals } from "@std/assert";
import {
  digestDifferences,
  pretrainDigest,
  referenceRuns,
  type RunDigest,
  runDigest,
} from "./run_digest.ts";

const THIS_FILE = "tests/reference/behaviour_digests_test.ts";
const runs = await referenceRuns();

Deno.test("behaviour_digests.json: every run says where it is checked; three are checked here", () => {
  const here = Object.keys(runs).filter((n) => runs[n].checked === THIS_FILE).sort();
  assertEquals(here, ["smoke-cpu", "smoke-wasm", "steps6-wasm"]);
  for (const [name, run] of Object.entries(runs)) {
    assert(
      run.checked === THIS_FILE || run.checked.startsWith("by hand"),
      `${name}: checked "${run.checked}"`,
    );
    assert(run.args.length > 0 && !run.args.includes("--out"), `${name}: args`);
    assertEquals(Object.keys(run.backbone).length > 0, true, `${name}: backbone digests`);
  }
});

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-digest-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const [name, run] of Object.entries(runs)) {
  if (run.checked !== THIS_FILE) continue;
  Deno.test(`${name}: today's code reproduces the reference digests bit for bit`, async () => {
    const actual = await withTempDir((dir) => pretrainDigest(run.args, `${dir}/run`));
    assertEquals(digestDifferences(run, actual), [], `${name}: ${run.args.join(" ")}`);
    assertEquals(actual.log_rows, run.log_rows);
    assertEquals(Object.keys(actual.backbone).sort(), Object.keys(run.backbone).sort());
  });
}

/** Flips the lowest bit of the first byte of `tensor` in a safetensors file, in place. */
async function flipFirstBit(path: string, tensor: string): Promise<void> {
  const bytes = await Deno.readFile(path);
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  bytes[8 + headerLength + header[tensor].data_offsets[0]] ^= 1;
  await Deno.writeFile(path, bytes);
}

Deno.test("a perturbed run, a flipped bit and a changed loss digit all show in the digests", async () => {
  const ref = runs["smoke-wasm"];
  await withTempDir(async (dir) => {
    const run = `${dir}/run`;
    // Another learning rate: same data, same number of steps, other numbers.
    const perturbed = await pretrainDigest([...ref.args, "--lr", "1e-3"], run);
    const diff = digestDifferences(ref, perturbed);
    assert(diff.includes("log"), diff.join(", "));
    assert(!diff.includes("log_rows"), "same number of steps");
    for (const t of ["blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.bias", "cls_token"]) {
      assert(diff.includes(`backbone.${t}`), `${t} should differ: ${diff.join(", ")}`);
    }
    assert(!diff.includes("backbone.pos_embed"), "the sin-cos table is fixed");

    // One bit of one tensor: that tensor's digest alone.
    const before: RunDigest = await runDigest(run);
    await flipFirstBit(`${run}/backbone.safetensors`, "norm.bias");
    assertEquals(digestDifferences(before, await runDigest(run)), ["backbone.norm.bias"]);

    // One digit of the last loss: the log alone; the timing column is not digested.
    const flipped = await runDigest(run);
    const lines = (await Deno.readTextFile(`${run}/log.csv`)).trimEnd().split("\n");
    const header = lines[0].split(",");
    const last = lines.at(-1)!.split(",");
    const timing = header.indexOf("images_per_s");
    last[timing] = String(Number(last[timing]) + 1);
    lines[lines.length - 1] = last.join(",");
    await Deno.writeTextFile(`${run}/log.csv`, lines.join("\n") + "\n");
    assertEquals(digestDifferences(flipped, await runDigest(run)), [], "timings are ignored");
    const loss = header.indexOf("loss");
    last[loss] = last[loss].slice(0, -1) + ((Number(last[loss].at(-1)) + 1) % 10);
    lines[lines.length - 1] = last.join(",");
    await Deno.writeTextFile(`${run}/log.csv`, lines.join("\n") + "\n");
    assertEquals(digestDifferences(flipped, await runDigest(run)), ["log"]);
  });
});
