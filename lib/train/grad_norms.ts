/**
 * Gradient norms by group, for the log (`grad_patch`, `grad_first_block`, `grad_last_block`,
 * `grad_heads`, `grad_total`) and for finding the first layer that went non-finite: the patch
 * projection, each block, the heads, and the total.
 *
 * @example
 * ```ts
 * import { gradNorms, groupLabel } from "./grad_norms.ts";
 * const norms = await gradNorms(grads, vit.depth); // depth + 3 values
 * groupLabel(norms.findIndex((v) => !Number.isFinite(v)), vit.depth); // e.g. "blocks.3"
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** Group gradient norms for logging and for finding the first layer that went non-finite. */
function gradGroups(grads: Record<string, unknown>, depth: number): string[][] {
  const groups: string[][] = [[], ...Array.from({ length: depth }, () => []), []];
  for (const name of Object.keys(grads)) {
    const m = /^base_encoder\.blocks\.(\d+)\./.exec(name);
    if (name.startsWith("base_encoder.patch_embed.")) groups[0].push(name);
    else if (m) groups[1 + Number(m[1])].push(name);
    else groups[depth + 1].push(name);
  }
  return groups;
}

/**
 * Names of {@link gradNorms}' values: patch_embed, blocks.0, ..., heads, total.
 *
 * @example
 * ```ts
 * [0, 1, 4, 5].map((i) => groupLabel(i, 3)); // ["patch_embed", "blocks.0", "heads", "total"]
 * ```
 */
export function groupLabel(i: number, depth: number): string {
  if (i === 0) return "patch_embed";
  if (i <= depth) return `blocks.${i - 1}`;
  return i === depth + 1 ? "heads" : "total";
}

/**
 * Gradient norms by group for the log and for finding the first layer that went non-finite:
 * patch projection, each block, heads, and the total (`depth + 3` values).
 *
 * @example
 * ```ts
 * const [patch, ...rest] = await gradNorms(grads, vit.depth);
 * ```
 */
export async function gradNorms(
  grads: Record<string, tf.Tensor>,
  depth: number,
): Promise<number[]> {
  const norms = tf.tidy(() => {
    const parts = gradGroups(grads, depth).map((g) =>
      g.length ? tf.sum(tf.stack(g.map((n) => tf.sum(tf.square(grads[n]))))) : tf.scalar(0)
    );
    return tf.sqrt(tf.stack([...parts, tf.addN(parts)]));
  });
  const values = Array.from(await norms.data());
  norms.dispose();
  return values;
}
