import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { installWasmMatMulFastPath, wasmMatMulRoutes } from "../../lib/backends/wasm/matmul.ts";
import { values } from "../_helpers/numeric.ts";

Deno.test("wasm matmul fast path: transposes and [B,N,D]@[D,E] take XNNPACK, match a float64 loop", async () => {
  await initBackend({ backend: "wasm" });
  installWasmMatMulFastPath();
  // [batchA, m, k] (stored transposed if ta) @ [k, n] (stored transposed if tb)
  const cases: [number, number, number, number, boolean, boolean][] = [
    [1, 33, 20, 17, false, true],
    [1, 33, 20, 17, true, false],
    [1, 33, 20, 17, true, true],
    [3, 9, 20, 17, false, false],
    [3, 9, 20, 17, false, true],
  ];
  const tensors = tf.memory().numTensors;
  for (const [batch, m, k, n, ta, tb] of cases) {
    const a = values(batch * m * k, 7), b = values(k * n, 8);
    const aShape = ta ? [k, m] : batch === 1 ? [m, k] : [batch, m, k];
    const before = wasmMatMulRoutes();
    const y = tf.tidy(() =>
      tf.matMul(tf.tensor(a, aShape), tf.tensor(b, tb ? [n, k] : [k, n]), ta, tb)
    );
    // Exactly one product, and it took the rerouted XNNPACK path (not tfjs's scalar loop).
    assertEquals(wasmMatMulRoutes(), { ...before, xnnpack: before.xnnpack + 1 });
    assertEquals(y.shape, batch === 1 ? [m, n] : [batch, m, n]);
    const got = y.dataSync();
    y.dispose();
    for (let p = 0; p < batch; p++) {
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let q = 0; q < k; q++) {
            const ai = ta ? a[q * m + i] : a[p * m * k + i * k + q]; // stored [k, m] or [.., m, k]
            const bj = tb ? b[j * k + q] : b[q * n + j]; // stored [n, k] or [k, n]
            s += ai * bj;
          }
          const g = got[p * m * n + i * n + j];
          assert(Math.abs(g - s) < 1e-5, `case ${[batch, m, k, n, ta, tb]}: ${g} vs ${s}`);
        }
      }
    }
  }
  assertEquals(tf.memory().numTensors, tensors);
});

Deno.test("wasm matmul fast path: a plain [M, K] @ [K, N] keeps tfjs's kernel", async () => {
  await initBackend({ backend: "wasm" });
  installWasmMatMulFastPath();
  const a = values(5 * 4, 9), b = values(4 * 3, 10);
  const before = wasmMatMulRoutes();
  const got = tf.tidy(() => tf.matMul(tf.tensor2d(a, [5, 4]), tf.tensor2d(b, [4, 3])).dataSync());
  assertEquals(wasmMatMulRoutes(), { ...before, unchanged: before.unchanged + 1 });
  let s = 0;
  for (let q = 0; q < 4; q++) s += a[q] * b[q * 3];
  assert(Math.abs(got[0] - s) < 1e-6, `${got[0]} vs ${s}`);
});
