// The fused linear layer of lib/backends/native (vn_linear, vn_linear_grad: the bias added in the
// product's output pass, the bias gradient summed as the weight gradient's product packs dy), on
// every matrix-product path this CPU has (float32 on each instruction set, bf16 emulated on each,
// AVX512-BF16 where present; a missing path is skipped with one line) and at 1, 2 and 3 threads:
// - bit for bit the unfused operations: the library's own product, then a float32 add of the
//   bias computed here (Math.fround); dx and dw the library's products; db the library's column
//   sum (the Sum kernel's);
// - against float64 references: y and dx, dw within the tolerance of their precision (float32:
//   k U sum|ab|; bf16: the products of bf16-rounded inputs, rounded here by comparing neighbours),
//   db within one float32 rounding of the float64 column sums;
// sizes around the tiles (MR, NR, KC 256 and 512, MC), odd sizes, k = 0, parallel and serial
// products; fc2's gradient after a GELU (vn_linear_grad with pre) likewise, against the product then
// the GeluGrad kernel, and against float64. (The layers through tfjs on the native backend are
// tested in native_backend_test.ts, with the other tests of the process-wide library.)
import { assert } from "@std/assert";
import { GEMM_MODES, type GemmMode, type IsaName } from "../../lib/backends/native/ffi.ts";
import { privateNative } from "../_helpers/native.ts";
import { erf } from "../_helpers/erf.ts";
import { assertSameBits, assertSameHalves, bf16, bf16Halves } from "../_helpers/numeric.ts";

const { lib, isas: ISAS } = await privateNative("vitssl-native-linear-test-");
const BF16_MODES: GemmMode[] = GEMM_MODES.filter((m, i) =>
  m !== "fp32" && i <= GEMM_MODES.indexOf(lib.bf16Supported())
);
for (const m of GEMM_MODES.filter((m) => m !== "fp32" && !BF16_MODES.includes(m))) {
  console.log(`skip: bf16 path ${m} (this CPU lacks it; best: ${lib.bf16Supported()})`);
}
const THREADS = [1, 2, 3];
const U = 2 ** -24;

function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s ^= s << 13, s ^= s >>> 17, s ^= s << 5;
    return ((s >>> 0) / 2 ** 32) * 2 - 1;
  });
}

/** float64 C = op(A) @ op(B) with |.| sums, inputs rounded by `round`. */
function ref(
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
  ta: boolean,
  tb: boolean,
  round: (x: number) => number,
) {
  const sum = new Float64Array(m * n), abs = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, t = 0;
      for (let p = 0; p < k; p++) {
        const x = round(a[ta ? p * m + i : i * k + p]) * round(b[tb ? j * k + p : p * n + j]);
        s += x;
        t += Math.abs(x);
      }
      sum[i * n + j] = s;
      abs[i * n + j] = t;
    }
  }
  return { sum, abs };
}

function near(
  name: string,
  got: Float32Array,
  r: { sum: Float64Array; abs: Float64Array },
  tol: number,
  extra: Float64Array | undefined = undefined,
) {
  for (let i = 0; i < got.length; i++) {
    const want = r.sum[i] + (extra?.[i] ?? 0);
    // The bias add rounds once more: U |y|.
    const bound = tol * r.abs[i] + (extra ? U * Math.abs(want) * 2 : 0);
    if (!(Math.abs(got[i] - want) <= bound)) {
      throw new Error(`${name}: element ${i} is ${got[i]}, want ${want} (bound ${bound})`);
    }
  }
}

type Path = [GemmMode, IsaName];
function paths(): Path[] {
  const out: Path[] = ISAS.map((isa) => ["fp32", isa]);
  for (const mode of BF16_MODES) {
    if (mode === "bf16-emulated") { for (const isa of ISAS) out.push([mode, isa]); }
    else out.push([mode, lib.isaSupported()]);
  }
  return out;
}

// [m, k, n]: rows, inputs, outputs of the layer (the weight gradient's product is n x m x k).
const SIZES: [number, number, number][] = [
  [1, 1, 1],
  [13, 7, 17],
  [97, 49, 33],
  [200, 301, 130],
  [1031, 33, 65], // dw's product has k = 1031 rows of dy: KC blocks of 256 and 512 and a rest
  [300, 600, 130], // parallel products (m n k >= 2^20)
  [29, 64, 40], // even k: a bf16-stored x is read in place, 2 strips of 12 rows, and 5 packed
  [5, 0, 3], // no inputs: y = b, dw = 0
];

Deno.test("native linear: fused bias and bias gradient equal the unfused kernels bit for bit, and float64", () => {
  try {
    for (const [m, k, n] of SIZES) {
      const x = rand(m * k, m + 3 * k), w = rand(n * k, n + 5), b = rand(n, 11 * n + 1);
      const dy = rand(m * n, 7 * m + n), res = rand(m * n, 13 * m + n + 1);
      const pre = rand(m * k, 17 * m + k + 2).map((v) => 4 * v); // fc1's pre-activation, [-4, 4]
      for (const [mode, isa] of paths()) {
        lib.setIsa(isa);
        lib.setPrecision(mode);
        const name = `${m}x${k}x${n} [${mode}, ${isa}]`;
        let first: Float32Array[] | undefined;
        for (const t of THREADS) {
          lib.setThreads(t);
          const y = new Float32Array(m * n).fill(NaN), y0 = new Float32Array(m * n).fill(NaN);
          lib.linear(x, w, b, null, y, m, k, n);
          const yNoBias = new Float32Array(m * n).fill(NaN);
          lib.linear(x, w, null, null, yNoBias, m, k, n);
          const yRes = new Float32Array(m * n).fill(NaN), yResOnly = new Float32Array(m * n);
          lib.linear(x, w, b, res, yRes, m, k, n);
          lib.linear(x, w, null, res, yResOnly, m, k, n);
          lib.bmm(x, w, y0, 1, m, k, n, false, true, 0, 0);
          const unfused = y0.map((v, i) => Math.fround(v + b[i % n]));
          assertSameBits(`${name} y`, y, unfused);
          assertSameBits(`${name} y without bias`, yNoBias, y0);
          // The residual's add after the bias's: res + (y0 + b), in float32.
          assertSameBits(
            `${name} y + residual`,
            yRes,
            unfused.map((v, i) => Math.fround(res[i] + v)),
          );
          assertSameBits(
            `${name} residual, no bias`,
            yResOnly,
            y0.map((v, i) => Math.fround(res[i] + v)),
          );
          // fc1 and its GELU: h as the biased product, y the library's own GELU of h.
          const hG = new Float32Array(m * n).fill(NaN), yG = new Float32Array(m * n).fill(NaN);
          lib.linearGelu(x, w, b, hG, yG, m, k, n);
          const yGelu = new Float32Array(m * n);
          lib.gelu(unfused, yGelu, m * n);
          assertSameBits(`${name} fc1 pre-activation`, hG, unfused);
          assertSameBits(`${name} fc1 GELU`, yG, yGelu);
          const dx = new Float32Array(m * k).fill(NaN), dw = new Float32Array(n * k).fill(NaN);
          const db = new Float32Array(n).fill(NaN);
          lib.linearGrad(dy, x, w, null, dx, dw, db, m, k, n);
          const dx0 = new Float32Array(m * k), dw0 = new Float32Array(n * k);
          const db0 = new Float32Array(n);
          lib.bmm(dy, w, dx0, 1, m, n, k, false, false, 0, 0);
          lib.bmm(dy, x, dw0, 1, n, m, k, true, false, 0, 0);
          lib.sumCols(dy, db0, m, n, 1);
          assertSameBits(`${name} dx`, dx, dx0);
          assertSameBits(`${name} dw`, dw, dw0);
          assertSameBits(`${name} db`, db, db0);
          const dw2 = new Float32Array(n * k).fill(NaN);
          lib.linearGrad(dy, x, w, null, dx, dw2, null, m, k, n);
          assertSameBits(`${name} dw without db`, dw2, dw0);
          // fc2 after a GELU: dx comes out at the pre-activation, GELU's gradient in the product's
          // output pass: the library's product, then its GeluGrad kernel; dw and db unchanged.
          const dxG = new Float32Array(m * k).fill(NaN), dwG = new Float32Array(n * k).fill(NaN);
          const dbG = new Float32Array(n).fill(NaN), dxG0 = new Float32Array(m * k);
          lib.linearGrad(dy, x, w, pre, dxG, dwG, dbG, m, k, n);
          lib.geluGrad(dx0, pre, dxG0, m * k);
          assertSameBits(`${name} dx at the pre-activation`, dxG, dxG0);
          assertSameBits(`${name} dw after GELU`, dwG, dw0);
          assertSameBits(`${name} db after GELU`, dbG, db0);
          const dwG2 = new Float32Array(n * k).fill(NaN);
          lib.linearGrad(dy, x, w, pre, dxG, dwG2, null, m, k, n);
          assertSameBits(`${name} dw after GELU without db`, dwG2, dw0);
          const outs = [y, dx, dw, db, yRes, yG, dxG];
          if (!first) {
            first = outs;
            const round = mode === "fp32" ? (v: number) => v : bf16;
            // float32 sums: at most k roundings (bound min(k, 8) U sum|ab|, as the bf16 test).
            const tol = (kk: number) => Math.max(1, Math.min(kk, 8)) * U;
            const bias = Float64Array.from({ length: m * n }, (_, i) => b[i % n]);
            near(`${name} y`, y, ref(x, w, m, k, n, false, true, round), tol(k), bias);
            // GELU of h against float64 (0.5 h (1 + erf(h / sqrt 2))): the kernel's erf is a rational
            // approximation (error below 1e-6 in GELU, as native_kernels_test.ts asserts at 2e-6).
            for (let i = 0; i < m * n; i += 7) {
              const h = hG[i], want = 0.5 * h * (1 + erf(h / Math.SQRT2));
              assert(
                Math.abs(yG[i] - want) <= 2e-6 * Math.abs(want) + 2e-6,
                `${name} gelu ${i}: h ${h} got ${yG[i]} want ${want}`,
              );
            }
            near(`${name} dx`, dx, ref(dy, w, m, n, k, false, false, round), tol(n));
            near(`${name} dw`, dw, ref(dy, x, n, m, k, true, false, round), tol(m));
            // dx at the pre-activation: (dy @ w) gelu'(pre), gelu'(v) = Phi(v) + v phi(v) in
            // float64; the product's bound scaled by |gelu'| <= 1.13, plus the erf approximation
            // (1.5e-7) and the float32 roundings of the derivative (a few U) times |dy @ w|.
            const rdx = ref(dy, w, m, n, k, false, false, round);
            for (let i = 0; i < m * k; i++) {
              const v = pre[i],
                d = 0.5 * (1 + erf(v / Math.SQRT2)) +
                  v * Math.exp(-v * v / 2) / Math.sqrt(2 * Math.PI);
              const want = rdx.sum[i] * d;
              const bound = 1.13 * tol(n) * rdx.abs[i] + (3e-7 + 8 * U) * Math.abs(rdx.sum[i]) +
                U * Math.abs(want);
              assert(
                Math.abs(dxG[i] - want) <= bound,
                `${name} dx at pre ${i}: ${dxG[i]} want ${want} (bound ${bound})`,
              );
            }
            for (let j = 0; j < n; j++) {
              let s = 0;
              for (let i = 0; i < m; i++) s += dy[i * n + j];
              assert(Math.abs(db[j] - s) <= U * Math.abs(s), `${name} db[${j}] ${db[j]} vs ${s}`);
            }
          } else {
            outs.forEach((o, j) =>
              assertSameBits(`${name} output ${j} at ${t} threads`, o, first![j])
            );
          }
        }
      }
    }
  } finally {
    lib.setPrecision("fp32");
    lib.setIsa(lib.isaSupported());
    lib.setThreads(1);
  }
});

// An activation stored as bf16 (linearGelu's and layernorm's y16, read back by linear,
// linearGelu and linearGrad as x16) against the float32 arrays: the stored bits are the float32 result rounded to nearest even (by
// bf16() above), and a product reading bf16 equals the one reading their float32 values; in the
// bf16 precisions also the one reading the unrounded floats, which it rounds the same way.
Deno.test("native linear: bf16-stored activations equal the float32 path bit for bit", () => {
  try {
    for (const [m, k, n] of SIZES) {
      const x = rand(m * k, m + 3 * k + 5), w = rand(n * k, n + 9), b = rand(n, 3 * n + 4);
      const dy = rand(m * n, 5 * m + n), res = rand(m * n, 11 * m + n + 3);
      const pre = rand(m * k, 19 * m + k).map((v) => 4 * v);
      const x16 = bf16Halves(x), xw = x.map(bf16);
      for (const [mode, isa] of paths()) {
        lib.setIsa(isa);
        lib.setPrecision(mode);
        for (const t of [1, 2]) {
          lib.setThreads(t);
          const name = `${m}x${k}x${n} [${mode}, ${isa}, ${t} threads]`;
          const fill = (len: number) => new Float32Array(len).fill(NaN);
          const y = fill(m * n), y16 = fill(m * n), yRaw = fill(m * n);
          // The bf16-stored input first: a product reading it in place must not find the other
          // call's packed rows in the scratch buffers.
          lib.linear(x16, w, b, res, y16, m, k, n, true);
          lib.linear(xw, w, b, res, y, m, k, n);
          assertSameBits(`${name} linear from bf16`, y16, y);
          const [dx, dw, db, dx16, dw16, db16] = [m * k, n * k, n, m * k, n * k, n].map(fill);
          lib.linearGrad(dy, xw, w, pre, dx, dw, db, m, k, n);
          lib.linearGrad(dy, x16, w, pre, dx16, dw16, db16, m, k, n, true);
          assertSameBits(`${name} dx (x bf16)`, dx16, dx);
          assertSameBits(`${name} dw from bf16`, dw16, dw);
          assertSameBits(`${name} db (x bf16)`, db16, db);
          if (mode !== "fp32") {
            const dwRaw = fill(n * k);
            lib.linear(x, w, b, res, yRaw, m, k, n);
            lib.linearGrad(dy, x, w, null, dx, dwRaw, null, m, k, n);
            assertSameBits(`${name} linear of the unrounded x`, yRaw, y);
            assertSameBits(`${name} dw of the unrounded x`, dwRaw, dw);
          }
          // fc1's GELU stored as bf16: the float32 GELU rounded; h unchanged.
          const h = fill(m * n), g = fill(m * n), h2 = fill(m * n);
          const g16 = new Uint16Array(m * n).fill(0xffff);
          lib.linearGelu(x, w, b, h, g, m, k, n);
          lib.linearGelu(x, w, b, h2, g16, m, k, n, false, true);
          assertSameBits(`${name} fc1 pre-activation (GELU as bf16)`, h2, h);
          assertSameHalves(`${name} GELU as bf16`, g16, bf16Halves(g));
          // fc1 reading a bf16 input (LayerNorm's, stored so): as from its float32 values.
          const hx = fill(m * n), gx = fill(m * n);
          lib.linearGelu(x16, w, b, hx, gx, m, k, n, true);
          lib.linearGelu(xw, w, b, h, g, m, k, n);
          assertSameBits(`${name} fc1 from bf16`, hx, h);
          assertSameBits(`${name} fc1's GELU from bf16`, gx, g);
          // LayerNorm over rows of k stored as bf16: its float32 output rounded.
          if (k > 0) {
            const gamma = rand(k, k + 1).map((v) => 1 + v / 4), beta = rand(k, k + 2);
            const z = fill(m * k), z16 = new Uint16Array(m * k).fill(0xffff);
            lib.layernorm(x, gamma, beta, z, m, k, 1e-6);
            lib.layernorm(x, gamma, beta, z16, m, k, 1e-6, true);
            assertSameHalves(`${name} LayerNorm as bf16`, z16, bf16Halves(z));
          }
        }
      }
    }
  } finally {
    lib.setPrecision("fp32");
    lib.setIsa(lib.isaSupported());
    lib.setThreads(1);
  }
});

// The rounding that stores an activation as bf16, on values with known answers: LayerNorm with
// gamma 0 outputs beta exactly, so its bf16 output is beta rounded, by hand (ties to even, just
// past and short of a tie, a negative tie, float32's largest value to infinity, a quiet NaN's
// sign and payload kept), across full vectors and a tail on every instruction set.
Deno.test("native: activations stored as bf16 round to nearest even (hand-checked values)", () => {
  const cases: [number, number][] = [
    [0x3f808000, 0x3f80], // 1 + 2^-8: a tie, kept bit 0: down
    [0x3f818000, 0x3f82], // 1 + 3 2^-8: a tie, kept bit 1: up
    [0x3f808001, 0x3f81], // just past a tie: up
    [0x3f807fff, 0x3f80], // just short: down
    [0xbf808000, 0xbf80], // a negative tie: to even
    [0x7f7fffff, 0x7f80], // float32's largest: past bf16's, to infinity
    [0xffc12345, 0xffc1], // a quiet NaN: sign and top payload bits kept
    [0x7fffffff, 0x7fff], // a NaN that rounding up would carry into the sign: kept a NaN
    [0x00000000, 0x0000],
    [0x40490fdb, 0x4049], // pi: down
  ];
  const d = 41, rows = 3; // 2 full vectors of 16 (or 5 of 8, 10 of 4) and a tail
  const beta = new Float32Array(d), want = new Uint16Array(rows * d);
  const betaBits = new Uint32Array(beta.buffer);
  for (let j = 0; j < d; j++) betaBits[j] = cases[j % cases.length][0];
  for (let i = 0; i < rows * d; i++) want[i] = cases[(i % d) % cases.length][1];
  const x = rand(rows * d, 77), gamma = new Float32Array(d);
  try {
    for (const isa of ISAS) {
      lib.setIsa(isa);
      const y16 = new Uint16Array(rows * d);
      lib.layernorm(x, gamma, beta, y16, rows, d, 1e-6, true);
      assertSameHalves(`bf16 storage [${isa}]`, y16, want);
    }
  } finally {
    lib.setIsa(lib.isaSupported());
  }
});
