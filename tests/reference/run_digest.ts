/**
 * A run directory's behaviour as digests, to show that a change of structure changed no number:
 * SHA-256 of `log.csv` without its timing column (`images_per_s`), of `knn.csv`, and of every
 * backbone tensor's bytes. `behaviour_digests.json` beside it holds the digests of the reference
 * runs listed there, made before the restructuring.
 *
 * ```sh
 * deno run -A tests/reference/run_digest.ts data/runs/smoke-wasm   # prints the digest as JSON
 * ```
 * @module
 */
import { readSafetensors } from "../../lib/io/safetensors.ts";

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Digests of a run directory (see the module doc). */
export async function runDigest(dir: string): Promise<Record<string, unknown>> {
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

if (import.meta.main) console.log(JSON.stringify(await runDigest(Deno.args[0]), null, 2));
