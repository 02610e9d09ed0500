// A pre-norm ViT block's two halves on the native backend (lib/model/layers.ts: residualAttention,
// x + proj(attention(qkv(layerNorm(x)))), and residualMlp, x + fc2(gelu(fc1(layerNorm(x))))), each
// one custom gradient whose backward adds the residual's gradient in LayerNorm's gradient kernel:
// the block's value and the gradients of its input and all twelve weights equal, bit for bit, the
// same block composed of the separately tested layers (layerNorm, linear, multiHeadAttention, mlp,
// with the engine summing the residual's gradient), in float32 and bf16 (with and without the qkv
// bias), without leaked tensors; with the attention probabilities asked for, the composition runs
// and returns them.
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { fastPathCalls, registerFastPaths } from "../../lib/backends/fused.ts";
import { KERNEL_FAST_PATHS } from "../../lib/backends/wasm/kernels.ts";
import { residualAttention, residualMlp } from "../../lib/model/layers.ts";
import { values } from "../_helpers/numeric.ts";

const [B, T, D, heads] = [3, 5, 16, 4];
const t = (shape: number[], seed: number, scale = 1) =>
  tf.tensor(values(shape.reduce((p, q) => p * q, 1), seed).map((v) => v * scale), shape);

/** The block's value and its 13 gradients (x, then the weights in `names` order) as arrays. */
function block(x: tf.Tensor3D, w: Record<string, tf.Tensor>, dy: tf.Tensor): Float32Array[] {
  const names = Object.keys(w);
  const f = (xx: tf.Tensor, ...ws: tf.Tensor[]) => {
    const p = Object.fromEntries(names.map((n, i) => [n, ws[i]]));
    const [h] = residualAttention(
      xx as tf.Tensor3D,
      {
        normW: p.n1w,
        normB: p.n1b,
        eps: 1e-6,
        qkvW: p.qkvW,
        qkvB: p.qkvB,
        projW: p.projW,
        projB: p.projB,
      },
      heads,
      0.5,
      false,
    );
    return residualMlp(h, {
      normW: p.n2w,
      normB: p.n2b,
      eps: 1e-6,
      w1: p.w1,
      b1: p.b1,
      w2: p.w2,
      b2: p.b2,
    });
  };
  const y = tf.tidy(() => f(x, ...names.map((n) => w[n])));
  const grads = tf.grads(f)([x, ...names.map((n) => w[n])], dy);
  const out = [y, ...grads].map((g) => g.dataSync() as Float32Array);
  tf.dispose([y, ...grads]);
  return out;
}

function sameBits(name: string, got: Float32Array, want: Float32Array) {
  assertEquals(got.length, want.length, `${name}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const v = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== v[i]) throw new Error(`${name}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}

Deno.test("native block: the fused attention and MLP halves equal the composed layers bit for bit, with gradients", async () => {
  // Both precisions; in bf16 also without the qkv projection's bias (timm's qkv_bias=False).
  for (const [precision, qkvBias] of [["fp32", true], ["bf16", true], ["bf16", false]] as const) {
    await initBackend({ backend: "native", threads: 2, precision });
    const x = t([B, T, D], 1) as tf.Tensor3D, dy = t([B * T, D], 2);
    const w: Record<string, tf.Tensor> = {
      n1w: t([D], 3, 0.2).add(1),
      n1b: t([D], 4, 0.1),
      qkvW: t([3 * D, D], 5, 0.3),
      qkvB: t([3 * D], 6, 0.1),
      projW: t([D, D], 7, 0.3),
      projB: t([D], 8, 0.1),
      n2w: t([D], 9, 0.2).add(1),
      n2b: t([D], 10, 0.1),
      w1: t([4 * D, D], 11, 0.3),
      b1: t([4 * D], 12, 0.1),
      w2: t([D, 4 * D], 13, 0.2),
      b2: t([D], 14, 0.1),
    };
    if (!qkvBias) {
      w.qkvB.dispose();
      delete w.qkvB;
    }
    const before = tf.memory().numTensors;
    const calls = fastPathCalls();
    const fused = block(x, w, dy);
    const after = fastPathCalls();
    assert(after.residualAttention >= calls.residualAttention + 2, "attention half not fused");
    assert(after.residualMlp >= calls.residualMlp + 2, "MLP half not fused");
    // The same block with the two halves' fast paths off: the layers they are made of.
    registerFastPaths("native", {
      ...KERNEL_FAST_PATHS,
      residualAttention: undefined,
      residualMlp: undefined,
    });
    try {
      const composed = block(x, w, dy);
      assertEquals(fastPathCalls().residualMlp, after.residualMlp, "the composition was fused");
      ["y", "dx", ...Object.keys(w).map((n) => "d" + n)].forEach((n, i) =>
        sameBits(`${precision} qkv bias ${qkvBias} ${n}`, fused[i], composed[i])
      );
    } finally {
      registerFastPaths("native", KERNEL_FAST_PATHS);
    }
    assertEquals(tf.memory().numTensors, before, "leaked tensors");
    // Asking for the attention probabilities takes the composition, which returns them.
    const [h, probs] = residualAttention(
      x,
      {
        normW: w.n1w,
        normB: w.n1b,
        eps: 1e-6,
        qkvW: w.qkvW,
        projW: w.projW,
      },
      heads,
      0.5,
      true,
    );
    assertEquals(probs?.shape, [B, heads, T, T]);
    const rows = tf.sum(probs!, -1).dataSync();
    for (const s of rows) assert(Math.abs(s - 1) < 1e-5, `probabilities sum to ${s}`);
    tf.dispose([h, probs!, x, dy, ...Object.values(w)]);
  }
});
