// The fused wasm kernels of lib/backends/wasm/kernels.c (via lib/backends/wasm/kernels.ts and lib/backends/wasm/matmul.ts)
// against float64 references written here: loops for products, sums and transposes, formulas for
// LayerNorm and GELU (erf by its Taylor series) and central finite differences for gradients.
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { ema, gelu, layerNorm, multiHeadAttention } from "../../lib/model/layers.ts";
import { fastPathCalls, type FastPathName } from "../../lib/backends/fused.ts";
import { swapGroups, wasmKernelsFor } from "../../lib/backends/wasm/kernels.ts";
import { wasmMatMulRoutes } from "../../lib/backends/wasm/matmul.ts";
import { applyGradients, createOptimizerState } from "../../lib/optim/optim.ts";
import { assertClose, values } from "../_helpers/numeric.ts";
import { erf } from "../_helpers/erf.ts";

const gelu64 = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));

function layerNorm64(x: ArrayLike<number>, g: ArrayLike<number>, b: ArrayLike<number>, d: number) {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    let mu = 0, v = 0;
    for (let j = 0; j < d; j++) mu += x[r * d + j] / d;
    for (let j = 0; j < d; j++) v += (x[r * d + j] - mu) ** 2 / d;
    for (let j = 0; j < d; j++) {
      y[r * d + j] = (x[r * d + j] - mu) / Math.sqrt(v + 1e-6) * g[j] + b[j];
    }
  }
  return y;
}

/**
 * Multi-head attention in float64: out [B*T, D] and probs [B, H, T, T] from qkv [B*T, 3D], plus
 * sum(out * r) + sum(probs * rp), the scalar whose gradient the test checks.
 */
function attention64(
  qkv: ArrayLike<number>,
  [B, T, H, hd]: number[],
  scale: number,
  r: ArrayLike<number>,
  rp: ArrayLike<number>,
) {
  const D = H * hd, out = new Float64Array(B * T * D), probs = new Float64Array(B * H * T * T);
  const at = (b: number, t: number, part: number, h: number, c: number) =>
    qkv[(b * T + t) * 3 * D + part * D + h * hd + c];
  let loss = 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        const s = Array.from({ length: T }, (_, j) => {
          let dot = 0;
          for (let c = 0; c < hd; c++) dot += at(b, i, 0, h, c) * at(b, j, 1, h, c);
          return dot * scale;
        });
        const mx = Math.max(...s), e = s.map((v) => Math.exp(v - mx));
        const z = e.reduce((a, v) => a + v, 0);
        for (let j = 0; j < T; j++) {
          const p = e[j] / z, pi = ((b * H + h) * T + i) * T + j;
          probs[pi] = p;
          loss += p * rp[pi];
          for (let c = 0; c < hd; c++) out[(b * T + i) * D + h * hd + c] += p * at(b, j, 2, h, c);
        }
      }
    }
  }
  for (let i = 0; i < out.length; i++) loss += out[i] * r[i];
  return { out, probs, loss };
}

/** Runs `f` and asserts that it took the fused route `name` exactly `times` times. */
function fusedCalls<T>(name: FastPathName, times: number, f: () => T): T {
  const before = fastPathCalls()[name];
  const out = f();
  assertEquals(fastPathCalls()[name] - before, times, `fused ${name} calls`);
  return out;
}

await initBackend({ backend: "wasm" });

Deno.test("the kernels are instantiated on the wasm backend's memory", () => {
  assert(wasmKernelsFor(tf.backend()) !== undefined);
  assertEquals(tf.getBackend(), "wasm");
});

Deno.test("batched matmul: every transpose pair, broadcast batches, odd sizes", () => {
  const [m, k, n] = [7, 5, 6]; // k and n not multiples of 4
  for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
    for (const [ba, bb] of [[6, 6], [1, 6], [6, 1]]) {
      if (bb === 1 && !ta) continue; // XNNPACK's path (tested in backend_test.ts)
      const a = values(ba * m * k, 1), b = values(bb * k * n, 2);
      const expected = new Float64Array(6 * m * n);
      for (let t = 0; t < 6; t++) {
        const oa = ba === 1 ? 0 : t * m * k, ob = bb === 1 ? 0 : t * k * n;
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let p = 0; p < k; p++) {
              s += a[oa + (ta ? p * m + i : i * k + p)] * b[ob + (tb ? j * k + p : p * n + j)];
            }
            expected[t * m * n + i * n + j] = s;
          }
        }
      }
      const before = tf.memory().numTensors;
      const simd = wasmMatMulRoutes().simd;
      const got = tf.tidy(() =>
        tf.matMul(
          tf.tensor3d(a, [ba, ta ? k : m, ta ? m : k]),
          tf.tensor3d(b, [bb, tb ? n : k, tb ? k : n]),
          ta,
          tb,
        ).dataSync()
      );
      assertEquals(tf.memory().numTensors, before);
      assertEquals(wasmMatMulRoutes().simd, simd + 1, "the product took the SIMD kernel");
      assertClose(got, expected, 1e-5);
    }
  }
});

Deno.test("x @ w^T stays right across calls and after w is replaced (transposed-weight cache)", () => {
  const [rows, d, e] = [9, 6, 5];
  const x = tf.tensor2d(values(rows * d, 3), [rows, d]);
  const ref = (w: Float32Array) => {
    const out = new Float64Array(rows * e);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < e; j++) {
        for (let p = 0; p < d; p++) out[i * e + j] += x.dataSync()[i * d + p] * w[j * d + p];
      }
    }
    return out;
  };
  const backend = tf.backend();
  const buffers = backend.numDataIds();
  for (let version = 0; version < 3; version++) {
    const wv = values(e * d, 10 + version);
    const w = tf.tensor2d(wv, [e, d]);
    for (let call = 0; call < 3; call++) {
      const y = tf.matMul(x, w, false, true);
      assertClose(y.dataSync(), ref(wv), 1e-5);
      y.dispose();
    }
    w.dispose(); // frees the cached w^T too
    assertEquals(backend.numDataIds(), buffers);
  }
  x.dispose();
});

Deno.test("swapGroups decomposes adjacent-group swaps and refuses other perms", () => {
  assertEquals(swapGroups([3, 4], [1, 0]), [1, 3, 4, 1]);
  assertEquals(swapGroups([2, 3, 4, 5], [0, 2, 1, 3]), [2, 3, 4, 5]);
  assertEquals(swapGroups([2, 3, 4], [2, 0, 1]), [1, 6, 4, 1]);
  assertEquals(swapGroups([2, 3, 4], [1, 2, 0]), [1, 2, 12, 1]);
  assertEquals(swapGroups([2, 3, 4, 5], [0, 3, 1, 2]), [2, 12, 5, 1]);
  assertEquals(swapGroups([2, 3], [0, 1]), [6, 1, 1, 1]);
  assertEquals(swapGroups([2, 3, 4, 5], [1, 0, 3, 2]), undefined);
  assertEquals(swapGroups([2, 3, 4], [2, 1, 0]), undefined);
});

Deno.test("transpose: float32 and int32, SIMD blocks and edges, against index arithmetic", () => {
  const shape = [3, 5, 6, 7];
  const size = shape.reduce((p, q) => p * q);
  const strides = [shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1];
  const perms = [[0, 2, 1, 3], [0, 1, 3, 2], [2, 3, 0, 1], [3, 0, 1, 2], [1, 0, 2, 3], [
    0,
    3,
    1,
    2,
  ]];
  const src = values(size, 4);
  for (const dtype of ["float32", "int32"] as const) {
    const data = dtype === "int32" ? Int32Array.from(src, (v) => Math.round(v * 1000)) : src;
    for (const perm of perms) {
      const outShape = perm.map((p) => shape[p]);
      const expected = new Float64Array(size);
      let o = 0;
      const idx = [0, 0, 0, 0];
      for (idx[0] = 0; idx[0] < outShape[0]; idx[0]++) {
        for (idx[1] = 0; idx[1] < outShape[1]; idx[1]++) {
          for (idx[2] = 0; idx[2] < outShape[2]; idx[2]++) {
            for (idx[3] = 0; idx[3] < outShape[3]; idx[3]++) {
              let s = 0;
              for (let i = 0; i < 4; i++) s += idx[i] * strides[perm[i]];
              expected[o++] = data[s];
            }
          }
        }
      }
      const got = tf.tidy(() => tf.transpose(tf.tensor(data, shape, dtype), perm).dataSync());
      assertClose(got, expected, 0);
    }
  }
});

Deno.test("sum over leading axes (bias gradients), keepDims, and other axes unchanged", () => {
  const shape = [4, 3, 10];
  const x = values(120, 5);
  const expected0 = new Float64Array(30), expected01 = new Float64Array(10);
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 3; j++) {
      for (let c = 0; c < 10; c++) {
        expected0[j * 10 + c] += x[i * 30 + j * 10 + c];
        expected01[c] += x[i * 30 + j * 10 + c];
      }
    }
  }
  const t = tf.tensor3d(x, shape as [number, number, number]);
  const s0 = tf.sum(t, 0), s01 = tf.sum(t, [1, 0], true), s2 = tf.sum(t, 2);
  assertEquals(s0.shape, [3, 10]);
  assertEquals(s01.shape, [1, 1, 10]);
  assertClose(s0.dataSync(), expected0, 1e-6);
  assertClose(s01.dataSync(), expected01, 1e-6);
  const expected2 = Array.from({ length: 12 }, (_, r) => {
    let s = 0;
    for (let c = 0; c < 10; c++) s += x[r * 10 + c];
    return s;
  });
  assertClose(s2.dataSync(), expected2, 1e-6);
  tf.dispose([t, s0, s01, s2]);
});

Deno.test("fused LayerNorm: forward by formula, gradients by finite differences", () => {
  const [rows, d] = [6, 9];
  const x = values(rows * d, 6), g = values(d, 7), b = values(d, 8), r = values(rows * d, 9);
  const y = fusedCalls(
    "layerNorm",
    1,
    () =>
      tf.tidy(() =>
        layerNorm(tf.tensor2d(x, [rows, d]), tf.tensor1d(g), tf.tensor1d(b), 1e-6).dataSync()
      ),
  );
  assertClose(y, layerNorm64(x, g, b, d), 2e-5);

  // loss = sum(LN(x) * r); its gradient for every input element by central differences.
  const loss = (xs: Float64Array, gs: Float64Array, bs: Float64Array) =>
    layerNorm64(xs, gs, bs, d).reduce((s, v, i) => s + v * r[i], 0);
  const fd = (which: 0 | 1 | 2) => {
    const args = [Float64Array.from(x), Float64Array.from(g), Float64Array.from(b)];
    return Array.from(args[which], (_, i) => {
      const h = 1e-5, v = args[which][i];
      args[which][i] = v + h;
      const up = loss(args[0], args[1], args[2]);
      args[which][i] = v - h;
      const down = loss(args[0], args[1], args[2]);
      args[which][i] = v;
      return (up - down) / (2 * h);
    });
  };
  const before = tf.memory().numTensors;
  const grads = fusedCalls("layerNorm", 1, () =>
    tf.tidy(() => {
      const f = tf.grads((xs: tf.Tensor, gs: tf.Tensor, bs: tf.Tensor) =>
        tf.sum(tf.mul(layerNorm(xs, gs, bs, 1e-6), tf.tensor2d(r, [rows, d])))
      );
      return f([tf.tensor2d(x, [rows, d]), tf.tensor1d(g), tf.tensor1d(b)]).map((t) =>
        t.dataSync()
      );
    }));
  assertEquals(tf.memory().numTensors, before);
  for (const which of [0, 1, 2] as const) assertClose(grads[which], fd(which), 1e-3);
});

Deno.test("fused GELU: exact erf GELU and its gradient", () => {
  const xs = Float32Array.from({ length: 203 }, (_, i) => -4 + i * 0.04); // 203: a scalar tail
  const y = fusedCalls("gelu", 1, () => tf.tidy(() => gelu(tf.tensor1d(xs)).dataSync()));
  assertClose(y, Array.from(xs, gelu64), 2e-6);
  // Far tails: GELU(x) = x Phi(x) is x or 0 to float32 precision.
  const tails = tf.tidy(() => gelu(tf.tensor1d([-30, -10, 10, 30])).dataSync());
  assertClose(tails, [0, 0, 10, 30], 1e-6);
  const dy = values(xs.length, 10);
  const dx = fusedCalls(
    "gelu",
    1,
    () =>
      tf.tidy(() =>
        tf.grad((t: tf.Tensor) => tf.sum(tf.mul(gelu(t), tf.tensor1d(dy))))(tf.tensor1d(xs))
          .dataSync()
      ),
  );
  const h = 1e-4;
  const expected = Array.from(xs, (v, i) => dy[i] * (gelu64(v + h) - gelu64(v - h)) / (2 * h));
  assertClose(dx, expected, 1e-5);
});

Deno.test("fused attention: outputs by float64 loops, gradient by finite differences", () => {
  // [B, T, H, hd]: padded rows (T = 5) and narrow heads; then ViT-like sizes (T = 17: a 16-wide
  // score block and a tail; hd = 32: 16-wide output blocks), gradient checked on 60 entries.
  for (const [dims, checked] of [[[3, 5, 2, 8], Infinity], [[2, 17, 2, 32], 60]] as const) {
    const [B, T, H, hd] = dims, D = H * hd, scale = 1 / Math.sqrt(hd);
    const qkv = values(B * T * 3 * D, 11), r = values(B * T * D, 12);
    const rp = values(B * H * T * T, 13);
    const ref = attention64(qkv, [...dims], scale, r, rp);
    const before = tf.memory().numTensors;
    // The forward once, and once more under the tape: both take the fused kernel.
    const [out, probs, grad] = fusedCalls("attention", 2, () =>
      tf.tidy(() => {
        const x = tf.tensor2d(qkv, [B * T, 3 * D]);
        const fused = multiHeadAttention(x, B, H, scale);
        const loss = (t: tf.Tensor) => {
          const [o, p] = multiHeadAttention(t as tf.Tensor2D, B, H, scale);
          const ro = tf.tensor2d(r, o.shape), rpt = tf.tensor(rp, p.shape);
          return tf.add(tf.sum(tf.mul(o, ro)), tf.sum(tf.mul(p, rpt)));
        };
        return [fused[0].dataSync(), fused[1].dataSync(), tf.grad(loss)(x).dataSync()];
      }));
    assertEquals(tf.memory().numTensors, before);
    assertClose(out, ref.out, 1e-5);
    assertClose(probs, ref.probs, 1e-6);
    // `grad` against central differences of attention64's loss with weights r and rpw, on every
    // step-th entry of qkv.
    const x64 = Float64Array.from(qkv), h = 1e-5;
    const step = Math.max(1, Math.floor(qkv.length / checked));
    const checkGrad = (grad: ArrayLike<number>, rpw: ArrayLike<number>) => {
      const at: number[] = [], fd: number[] = [];
      for (let i = 0; i < qkv.length; i += step) {
        const v = x64[i];
        x64[i] = v + h;
        const up = attention64(x64, [...dims], scale, r, rpw).loss;
        x64[i] = v - h;
        const down = attention64(x64, [...dims], scale, r, rpw).loss;
        x64[i] = v;
        at.push(grad[i]);
        fd.push((up - down) / (2 * h));
      }
      assertClose(at, fd, 1e-4);
    };
    // The gradient reaches qkv through both outputs (probs too: attention maps under a tape).
    checkGrad(grad, rp);
    // Without the probabilities (a training forward): the custom gradient, whose backward has no
    // dprobs, against finite differences of sum(out * r) alone.
    const [noProbs, gradOut] = fusedCalls("attention", 2, () =>
      tf.tidy(() => {
        const x = tf.tensor2d(qkv, [B * T, 3 * D]), ro = tf.tensor2d(r, [B * T, D]);
        const [o, p] = multiHeadAttention(x, B, H, scale, false);
        const loss = (t: tf.Tensor) =>
          tf.sum(tf.mul(multiHeadAttention(t as tf.Tensor2D, B, H, scale, false)[0], ro));
        return [p === undefined && o.shape.join() === `${B * T},${D}`, tf.grad(loss)(x).dataSync()];
      }));
    assertEquals(tf.memory().numTensors, before);
    assert(noProbs, "no probabilities without withProbs");
    checkGrad(gradOut as Float32Array, new Float32Array(rp.length));
  }
  // A head width that is not a multiple of 4 (6) takes the unfused path, which is right too.
  const dims = [2, 3, 2, 6], qkv = values(2 * 3 * 3 * 12, 14);
  const ref = attention64(qkv, dims, 0.5, new Float32Array(2 * 3 * 12), new Float32Array(72));
  const [out, probs] = fusedCalls(
    "attention",
    0,
    () =>
      tf.tidy(() =>
        multiHeadAttention(tf.tensor2d(qkv, [6, 36]), 2, 2, 0.5).map((t: tf.Tensor) => t.dataSync())
      ),
  );
  assertClose(out, ref.out, 1e-5);
  assertClose(probs, ref.probs, 1e-6);
});

Deno.test("split and concat along every axis, uneven parts, float32 and int32", () => {
  const shape = [3, 4, 5];
  const src = values(60, 17);
  for (const dtype of ["float32", "int32"] as const) {
    const data = dtype === "int32" ? Int32Array.from(src, (v) => Math.round(v * 1000)) : src;
    const get = (i: number, j: number, l: number) => data[i * 20 + j * 5 + l];
    for (let axis = 0; axis < 3; axis++) {
      const sizes = [[1, 2], [1, 3], [2, 0, 3]][axis];
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        const x = tf.tensor(data, shape, dtype);
        const parts = tf.split(x, sizes, axis);
        let start = 0;
        for (const [p, part] of parts.entries()) {
          const want: number[] = [];
          for (let i = 0; i < 3; i++) {
            for (let j = 0; j < 4; j++) {
              for (let l = 0; l < 5; l++) {
                const c = [i, j, l][axis];
                if (c >= start && c < start + sizes[p]) want.push(get(i, j, l));
              }
            }
          }
          assertEquals(part.shape[axis], sizes[p]);
          assertEquals(Array.from(part.dataSync()), want);
          start += sizes[p];
        }
        assertEquals(Array.from(tf.concat(parts, axis).dataSync()), Array.from(data));
      });
      assertEquals(tf.memory().numTensors, before);
    }
  }
});

Deno.test("Identity (tf.clone) shares data and survives the original's disposal", () => {
  const x = tf.tensor1d([1, 2, 3]);
  const y = tf.clone(x);
  const be = tf.backend() as unknown as {
    dataIdMap: { get(id: unknown): { memoryOffset: number } };
  };
  assertEquals(be.dataIdMap.get(y.dataId).memoryOffset, be.dataIdMap.get(x.dataId).memoryOffset);
  x.dispose();
  assertEquals(Array.from(y.dataSync()), [1, 2, 3]);
  y.dispose();
});

Deno.test("fused AdamW and EMA equal the unfused float32 ops bit for bit", () => {
  const n = 37, lr = 3e-3, wd = 0.1, [b1, b2, eps] = [0.9, 0.999, 1e-8];
  const p0 = values(n, 13), g0 = values(n, 14);
  const p = tf.variable(tf.tensor2d(p0, [1, n]), true, "w");
  const params = { "blocks.0.mlp.fc1.weight": p };
  const cfg = { name: "adamw" as const, weightDecay: wd };
  const state = createOptimizerState(cfg, params);
  const before = tf.memory().numTensors;
  // Reference: torch.optim.AdamW's formulas as separate float32 tfjs ops (two steps).
  let [pr, mr, vr] = [tf.tensor2d(p0, [1, n]), tf.zeros([1, n]), tf.zeros([1, n])];
  for (let t = 1; t <= 2; t++) {
    const g = tf.tensor2d(g0.map((x) => x * t), [1, n]);
    fusedCalls(
      "adamw",
      1,
      () => applyGradients(params, { "blocks.0.mlp.fc1.weight": g }, state, cfg, lr),
    );
    const [pn, mn, vn] = tf.tidy(() => {
      const m1 = tf.add(mr, tf.mul(tf.sub(g, mr), 1 - b1));
      const v1 = tf.add(tf.mul(vr, b2), tf.mul(tf.square(g), 1 - b2));
      const denom = tf.add(tf.div(tf.sqrt(v1), Math.sqrt(1 - b2 ** t)), eps);
      return [
        tf.sub(tf.mul(pr, 1 - lr * wd), tf.mul(tf.div(m1, denom), lr / (1 - b1 ** t))),
        m1,
        v1,
      ];
    });
    tf.dispose([pr, mr, vr, g]);
    [pr, mr, vr] = [pn, mn, vn];
  }
  assertEquals(Array.from(p.dataSync()), Array.from(pr.dataSync()));
  assertEquals(
    Array.from(state.slots["exp_avg/blocks.0.mlp.fc1.weight"].dataSync()),
    Array.from(mr.dataSync()),
  );
  assertEquals(
    Array.from(state.slots["exp_avg_sq/blocks.0.mlp.fc1.weight"].dataSync()),
    Array.from(vr.dataSync()),
  );
  tf.dispose([pr, mr, vr]);
  assertEquals(tf.memory().numTensors, before);

  const target = tf.tensor1d(values(n, 15)), source = tf.tensor1d(values(n, 16));
  const expected = tf.tidy(() => tf.add(tf.mul(target, 0.99), tf.mul(source, 1 - 0.99)).dataSync());
  const got = fusedCalls("ema", 1, () => tf.tidy(() => ema(target, source, 0.99).dataSync()));
  assertEquals(Array.from(got), Array.from(expected));
  tf.dispose([p, target, source, ...Object.values(state.slots)]);
});

Deno.test({
  name: "the kernels also run on the threaded build's shared memory",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await initBackend({ backend: "wasm", threads: 2 });
    try {
      const mem = (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8;
      assert(mem.buffer instanceof SharedArrayBuffer);
      assert(wasmKernelsFor(tf.backend()) !== undefined);
      const xs = Float32Array.from([-2, -0.5, 0, 0.5, 2]);
      const y = fusedCalls("gelu", 1, () => tf.tidy(() => gelu(tf.tensor1d(xs)).dataSync()));
      assertClose(y, Array.from(xs, gelu64), 2e-6);
      const a = values(2 * 3 * 4, 11), b = values(2 * 4 * 5, 12);
      const got = tf.tidy(() =>
        tf.matMul(tf.tensor3d(a, [2, 3, 4]), tf.tensor3d(b, [2, 4, 5])).dataSync()
      );
      assertClose(
        got.subarray(0, 1),
        [a[0] * b[0] + a[1] * b[5] + a[2] * b[10] + a[3] * b[15]],
        1e-6,
      );
    } finally {
      tf.removeBackend("wasm");
      await initBackend({ backend: "wasm" });
    }
  },
});
