/**
 * A run directory's behaviour as digests, to show that a change of structure changed no number:
 * SHA-256 of `log.csv` without its timing column (`images_per_s`), of `knn.csv`, and of every
 * backbone tensor's bytes. `behaviour_digests.json` beside it holds the digests of the reference
 * runs listed there, made before the restructuring: each run's `command` (as it ran then), its
 * `args` (the same run with today's `lib/cli/pretrain.ts`: see the file's `args_note`), and
 * `checked`, where it is recomputed and compared: `behaviour_digests_test.ts` checks the cheap
 * runs in every test run, the slow ones are checked by hand with `--check`.
 *
 * ```sh
 * deno run -A tests/reference/run_digest.ts data/runs/smoke-wasm   # prints the digest as JSON
 * deno run -A tests/reference/run_digest.ts --check steps6-cpu     # reruns, compares, exit 1 if not
 * ```
 * @module
 */
import { readSafetensors } from "../../lib/io/safetensors.ts";
import { spawnPretrain } from "../_helpers/pretrain_child.ts";

/** The digests of one run directory (see the module doc). */
export interface RunDigest {
  /** SHA-256 of `log.csv` without its `images_per_s` column. */
  log: string;
  /** Rows of `log.csv` (its header left out). */
  log_rows: number;
  /** SHA-256 of `knn.csv` (of "" when there is none). */
  knn: string;
  /** SHA-256 of each backbone tensor's bytes, by name. */
  backbone: Record<string, string>;
}

/** A reference run of `behaviour_digests.json`: how to make it, where it is checked, its digests. */
export interface ReferenceRun extends RunDigest {
  /** The command as it ran at the reference commit. */
  command: string;
  /** The same run with today's `lib/cli/pretrain.ts` (`--out DIR` is added). */
  args: string[];
  /** Where it is recomputed and compared. */
  checked: string;
}

/** `behaviour_digests.json`, beside this file. */
export const DIGESTS_FILE = new URL("./behaviour_digests.json", import.meta.url).pathname;

/** The reference runs of {@link DIGESTS_FILE}, by name. */
export async function referenceRuns(): Promise<Record<string, ReferenceRun>> {
  return JSON.parse(await Deno.readTextFile(DIGESTS_FILE)).runs;
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Digests of a run directory (see the module doc).
 *
 * @example
 * ```ts
 * const d = await runDigest("data/runs/smoke-wasm"); // { log, log_rows, knn, backbone }
 * ```
 */
export async function runDigest(dir: string): Promise<RunDigest> {
  const log = (await Deno.readTextFile(`${dir}/log.csv`)).trim().split("\n").map((l) =>
    l.split(",")
  );
  const drop = log[0].indexOf("images_per_s");
  const logText = log.map((r) => r.filter((_, i) => i !== drop).join(",")).join("\n");
  const knn = await Deno.readTextFile(`${dir}/knn.csv`).catch(() => "");
  const { tensors } = await readSafetensors(`${dir}/backbone.safetensors`);
  const backbone: Record<string, string> = {};
  for (const name of Object.keys(tensors).sort()) {
    const t = tensors[name];
    backbone[name] = await sha256(
      new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    );
  }
  return {
    log: await sha256(new TextEncoder().encode(logText)),
    log_rows: log.length - 1,
    knn: await sha256(new TextEncoder().encode(knn)),
    backbone,
  };
}

/**
 * Runs `deno run lib/cli/pretrain.ts ...args --out dir` as a child process (its own backend)
 * and returns the digests of the run directory; throws with the child's output if it fails.
 *
 * @example
 * ```ts
 * const d = await pretrainDigest(["--preset", "smoke", "--backend", "wasm"], "/tmp/run");
 * ```
 */
export async function pretrainDigest(args: string[], dir: string): Promise<RunDigest> {
  const out = await spawnPretrain([...args, "--out", dir]).output();
  if (!out.success) {
    const dec = new TextDecoder();
    throw new Error(
      `pretrain ${args.join(" ")} failed (exit ${out.code}):\n` +
        `${dec.decode(out.stdout)}\n${dec.decode(out.stderr)}`,
    );
  }
  return await runDigest(dir);
}

/**
 * The fields where `actual` differs from `expected`: `log`, `log_rows`, `knn`, and
 * `backbone.<name>` for each tensor whose digest differs, is missing or is extra.
 *
 * @example
 * ```ts
 * digestDifferences(reference, await runDigest(dir)); // [] when bit-identical
 * ```
 */
export function digestDifferences(expected: RunDigest, actual: RunDigest): string[] {
  const out: string[] = [];
  for (const k of ["log", "log_rows", "knn"] as const) {
    if (expected[k] !== actual[k]) out.push(k);
  }
  const names = new Set([...Object.keys(expected.backbone), ...Object.keys(actual.backbone)]);
  for (const n of [...names].sort()) {
    if (expected.backbone[n] !== actual.backbone[n]) out.push(`backbone.${n}`);
  }
  return out;
}

if (import.meta.main) {
  if (Deno.args[0] === "--check") {
    const runs = await referenceRuns();
    let failed = false;
    for (const name of Deno.args.slice(1)) {
      const run = runs[name];
      if (!run) throw new Error(`no run "${name}": choose among ${Object.keys(runs).join(", ")}`);
      const dir = await Deno.makeTempDir({ prefix: `vitssl-digest-${name}-` });
      try {
        const diff = digestDifferences(run, await pretrainDigest(run.args, dir));
        console.log(`${name}: ${diff.length ? `DIFFERS in ${diff.join(", ")}` : "bit-identical"}`);
        failed ||= diff.length > 0;
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
    if (failed) Deno.exit(1);
  } else {
    console.log(JSON.stringify(await runDigest(Deno.args[0]), null, 2));
  }
}
