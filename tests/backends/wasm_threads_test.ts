import * as tf from "@tensorflow/tfjs-core";
import { assertEquals } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { wasmThreadsUnsupportedReason } from "../../lib/backends/wasm/threads.ts";
import { assertClose, values } from "../_helpers/numeric.ts";

const reason = wasmThreadsUnsupportedReason();
if (reason) console.log(`wasm_threads_test: skipped, ${reason}`);

/** Reference matmul in float64: `[m, k] @ [k, n]`, optional `b` transposed (`[n, k]`). */
function refMatMul(
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
  transposeB = false,
): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * k + p] * (transposeB ? b[j * k + p] : b[p * n + j]);
      out[i * n + j] = s;
    }
  }
  return out;
}

Deno.test({
  name: "wasm with 2 threads matches a float64 reference and the cpu backend",
  ignore: reason !== undefined,
  // the pthread pool's workers outlive the test (they end with the backend)
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    // A ViT-like chain: tokens [B*N, D] @ W1 [D, H] -> relu -> @ W2 [H, D], and attention
    // scores q @ k^T per head. Big enough (256 rows) that XNNPACK splits the work over threads.
    const [rows, d, h] = [256, 64, 192];
    const x = values(rows * d, 1), w1 = values(d * h, 2), w2 = values(h * d, 3);
    const hid = refMatMul(x, w1, rows, d, h).map((v) => Math.max(v, 0));
    const expected = refMatMul(Float32Array.from(hid), w2, rows, h, d);
    const [heads, n, dh] = [8, 17, 16];
    const q = values(heads * n * dh, 4), k = values(heads * n * dh, 5);
    const expectedScores = new Float64Array(heads * n * n);
    for (let i = 0; i < heads; i++) {
      const s = refMatMul(q.subarray(i * n * dh), k.subarray(i * n * dh), n, dh, n, true);
      expectedScores.set(s, i * n * n);
    }

    const run = () =>
      tf.tidy(() => {
        const y = tf.matMul(
          tf.relu(tf.matMul(tf.tensor2d(x, [rows, d]), tf.tensor2d(w1, [d, h]))),
          tf.tensor2d(w2, [h, d]),
        );
        const scores = tf.matMul(
          tf.tensor3d(q, [heads, n, dh]),
          tf.tensor3d(k, [heads, n, dh]),
          false,
          true,
        );
        return [y.dataSync(), scores.dataSync()];
      });

    await initBackend({ backend: "cpu" });
    const [cpuY, cpuScores] = run();

    const info = await initBackend({ backend: "wasm", threads: 2 });
    assertEquals(info.name, "wasm");
    assertEquals(info.threads, 2);
    const before = tf.memory().numTensors;
    const [y, scores] = run();
    assertEquals(tf.memory().numTensors, before);

    assertClose(y, expected, 1e-5);
    assertClose(scores, expectedScores, 1e-5);
    assertClose(y, cpuY, 1e-5);
    assertClose(scores, cpuScores, 1e-5);

    // Disposing the backend terminates its pthread workers; then the default build comes back.
    tf.removeBackend("wasm");
    const single = await initBackend({ backend: "wasm" });
    assertEquals(single.threads, 1);
    const [y1] = run();
    assertClose(y1, y, 1e-6);
  },
});
