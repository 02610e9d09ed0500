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
import { assert, assertEquals } from "@std/assert";
import { GEMM_MODES, type GemmMode, type IsaName } from "../../lib/backends/native/ffi.ts";
import { privateNative } from "../_helpers/native.ts";
import { erf } from "../_helpers/erf.ts";
import { assertSameBits } from "../_helpers/numeric.ts";

const { lib, isas: ISAS } = await privateNative("vitssl-native-linear-test-");
const BF16_MODES: GemmMode[] = GEMM_MODES.filter((m, i) =>
  m !== "fp32" && i <= GEMM_MODES.indexOf(lib.bf16Supported())
);
for (const m of GEMM_MODES.filter((m) => m !== "fp32" && !BF16_MODES.includes(m))) {
  console.log(`skip: bf16 path ${m} (this CPU lacks it; best: ${lib.bf16Supported()})`);
}
const THREADS = [1, 2, 3];
const U = 2 ** -24;

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
const bits = (x: number) => (f32[0] = x, u32[0]);
const fromBits = (b: number) => (u32[0] = b >>> 0, f32[0]);
/** x rounded to bf16, to nearest, ties to even, by comparing its two bf16 neighbours. */
function bf16(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const lo = fromBits(bits(x) & 0xffff0000), hi = fromBits((bits(x) & 0xffff0000) + 0x10000);
  const dl = Math.abs(x - lo), dh = Math.abs(hi - x);
  return dl < dh ? lo : dh < dl ? hi : ((bits(lo) >>> 16) & 1) === 0 ? lo : hi;
}

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
