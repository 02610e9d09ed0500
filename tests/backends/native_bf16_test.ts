// The bf16 matrix products of lib/backends/native (vn_set_precision), called directly: every bf16
// path this CPU has (the emulated one everywhere, on each instruction set; AVX512-BF16 where the
// CPU has it; a missing path is skipped with one line) against float64 sums of bf16-rounded
// inputs, where the rounding is computed here by comparing the two nearest bf16 values in
// float64 (not by the library's bit trick); hand-checked roundings of specific bit patterns
// (ties to even, NaN, overflow); the distance from the float32 product; bit-identical results at
// 1, 2 and 3 threads.
import { assert, assertEquals, assertThrows } from "@std/assert";
import { GEMM_MODES, type GemmMode, type IsaName } from "../../lib/backends/native/ffi.ts";
import { privateNative } from "../_helpers/native.ts";
import { bf16, f32Bits, fromF32Bits } from "../_helpers/numeric.ts";

// A private copy of the library: this file switches its precision, instruction set and threads.
const { lib, isas: ISAS } = await privateNative("vitssl-native-bf16-test-");
const BF16_MODES: GemmMode[] = GEMM_MODES.filter((m, i) =>
  m !== "fp32" && i <= GEMM_MODES.indexOf(lib.bf16Supported())
);
for (const m of GEMM_MODES.filter((m) => m !== "fp32" && !BF16_MODES.includes(m))) {
  console.log(`skip: bf16 path ${m} (this CPU lacks it; best: ${lib.bf16Supported()})`);
}
console.log(`bf16 paths tested: ${BF16_MODES.join(", ")}`);
const THREADS = [1, 2, 3];
const U = 2 ** -24; // float32's unit roundoff

function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13, s ^= s >>> 17, s ^= s << 5;
    return ((s >>> 0) / 2 ** 32) * 2 - 1;
  };
}
function rand(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * scale);
}

/** float64 sums of products and of their magnitudes, after rounding the inputs with `round`. */
function reference(
  a: Float32Array,
  b: Float32Array,
  batch: number,
  m: number,
  k: number,
  n: number,
  ta: boolean,
  tb: boolean,
  sa: number,
  sb: number,
  round: (x: number) => number,
): { sum: Float64Array; abs: Float64Array } {
  const ra = a.map(round), rb = b.map(round);
  const sum = new Float64Array(batch * m * n), abs = new Float64Array(batch * m * n);
  for (let q = 0; q < batch; q++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0, t = 0;
        for (let p = 0; p < k; p++) {
          const x = ra[q * sa + (ta ? p * m + i : i * k + p)] *
            rb[q * sb + (tb ? j * k + p : p * n + j)];
          s += x;
          t += Math.abs(x);
        }
        sum[q * m * n + i * n + j] = s;
        abs[q * m * n + i * n + j] = t;
      }
    }
  }
  return { sum, abs };
}

/** Runs `f` at every thread count in `mode` (and isa): results must be bit-identical. */
function atEveryThreadCount(name: string, mode: GemmMode, isa: IsaName, f: () => Float32Array) {
  lib.setIsa(isa);
  lib.setPrecision(mode);
  let first: Uint32Array | undefined;
  try {
    for (const t of THREADS) {
      lib.setThreads(t);
      const out = f();
      const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
      if (!first) {
        first = u;
        continue;
      }
      for (let i = 0; i < u.length; i++) {
        if (u[i] !== first[i]) {
          throw new Error(`${name} [${mode}, ${isa}]: element ${i} differs at ${t} threads`);
        }
      }
    }
  } finally {
    lib.setThreads(1);
  }
  return new Float32Array(first!.buffer, first!.byteOffset, first!.length);
}

/** (mode, isa) pairs: the emulated path on every instruction set, the others as they are. */
function paths(): [GemmMode, IsaName][] {
  const out: [GemmMode, IsaName][] = [];
  for (const mode of BF16_MODES) {
    if (mode === "bf16-emulated") { for (const isa of ISAS) out.push([mode, isa]); }
    else out.push([mode, lib.isaSupported()]);
  }
  return out;
}

function reset() {
  lib.setPrecision("fp32");
  lib.setIsa(lib.isaSupported());
  lib.setThreads(1);
}

Deno.test("native bf16: the reference rounding itself, by hand", () => {
  assertEquals(f32Bits(bf16(1 + 2 ** -8)), 0x3f800000); // a tie, kept bit 0: down to even
  assertEquals(f32Bits(bf16(1 + 3 * 2 ** -8)), 0x3f820000); // a tie, kept bit 1: up to even
  assertEquals(f32Bits(bf16(fromF32Bits(0x3f808001))), 0x3f810000); // just above a tie: up
  assertEquals(f32Bits(bf16(fromF32Bits(0x3f807fff))), 0x3f800000); // just below: down
  assertEquals(f32Bits(bf16(-(1 + 2 ** -8))), 0xbf800000);
  assertEquals(bf16(fromF32Bits(0x7f7fffff)), Infinity); // float32's max is past bf16's max + 1/2 ulp
});

Deno.test("native bf16: precision modes and their errors", () => {
  try {
    assertEquals(lib.precision(), "fp32");
    assertEquals(lib.setPrecision("bf16"), lib.bf16Supported());
    assertEquals(lib.precision(), lib.bf16Supported());
    assertEquals(lib.setPrecision("bf16-emulated"), "bf16-emulated");
    if (!BF16_MODES.includes("bf16-avx512bf16")) {
      assertThrows(() => lib.setPrecision("bf16-avx512bf16"), Error, "this CPU has no");
      assertEquals(lib.precision(), "bf16-emulated"); // unchanged
    }
    assertThrows(() => lib.setPrecision("fp16" as GemmMode), Error, "this CPU has no fp16");
    assertEquals(lib.setPrecision("fp32"), "fp32");
  } finally {
    reset();
  }
});

Deno.test("native bf16: inputs are rounded to nearest even (specific bit patterns, NaN, overflow)", () => {
  // [input bits, bits of its bf16 rounding] by hand: bf16 keeps the top 16 bits.
  const cases: [number, number][] = [
    [0x3f808000, 0x3f800000], // 1 + 2^-8: a tie, kept bit 0: down
    [0x3f818000, 0x3f820000], // 1 + 3 * 2^-8: a tie, kept bit 1: up
    [0x3f808001, 0x3f810000], // above the tie: up
    [0x3f807fff, 0x3f800000], // below the tie: down
    [0xbf818000, 0xbf820000], // negative tie, kept bit 1: away from zero (to even)
    [0x40490fdb, 0x40490000], // pi: down (0x0fdb < 0x8000)
    [0x3eaaaaab, 0x3eab0000], // 1/3: up (0xaaab > 0x8000)
    [0x7f7fffff, 0x7f800000], // float32's max: to infinity
    [0x7f800000, 0x7f800000], // infinity stays
    [0x00000000, 0x00000000],
  ];
  try {
    for (const [mode, isa] of paths()) {
      lib.setIsa(isa);
      lib.setPrecision(mode);
      for (const [inBits, want] of cases) {
        const x = new Float32Array([fromF32Bits(inBits)]), one = new Float32Array([1]);
        for (const [a, b] of [[x, one], [one, x]]) {
          const c = new Float32Array(1);
          lib.bmm(a, b, c, 1, 1, 1, 1, false, false, 0, 0);
          assertEquals(
            f32Bits(c[0]).toString(16),
            want.toString(16),
            `${mode} [${isa}]: ${inBits.toString(16)}`,
          );
        }
      }
      // NaNs stay NaN, also one whose payload is only in the low 16 bits (truncation would make
      // it an infinity), and the NaN poisons its row only.
      for (const nan of [0x7fc00000, 0x7f800001, 0xff800001]) {
        const a = new Float32Array([fromF32Bits(nan), 2, 1, 1]), c = new Float32Array(4);
        lib.bmm(a, new Float32Array([1, 1, 1, 1]), c, 1, 2, 2, 2, false, false, 0, 0);
        assert(Number.isNaN(c[0]) && Number.isNaN(c[1]), `${mode}: NaN ${nan.toString(16)}`);
        assertEquals([c[2], c[3]], [2, 2]);
      }
    }
  } finally {
    reset();
  }
});

Deno.test("native bf16: matmul, every transpose, odd sizes, batches, against float64", () => {
  // Sizes around the tiles (MR 6/12, NR 8/16/32, KC 256 (float32) and 512 (AVX512-BF16), MC),
  // odd k (a padded pair), batches with strides and a shared (stride 0) right operand.
  const sizes: [number, number, number, number, number][] = [
    [1, 1, 1, 1, 1],
    [1, 7, 33, 1, 1],
    [13, 301, 37, 1, 1],
    [97, 1031, 65, 1, 1],
    [25, 41, 17, 3, 1],
    [9, 33, 31, 4, 0],
    [200, 96, 130, 1, 1],
  ];
  try {
    for (const [m, k, n, batch, shareB] of sizes) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          const sa = m * k, sb = shareB ? k * n : 0;
          const a = rand(batch * m * k, m + k), b = rand((shareB ? batch : 1) * k * n, n + 7);
          const ref = reference(a, b, batch, m, k, n, ta, tb, sa, sb, bf16);
          // Float32 sums of exact products (bf16 x bf16 fits float32's 24 bits): at most k - 1
          // roundings of at most U each of a partial sum, so |error| <= (k - 1) U sum|ab|. That
          // worst case is far from reached for random signs; min(k, 8) U sum|ab| is what is
          // asserted (exact for k = 1), still ~10x under the 2^-9 relative error of each input
          // that skipping the rounding would leave.
          const tol = Math.min(k, 8) * U;
          for (const [mode, isa] of paths()) {
            const name = `${m}x${k}x${n} x${batch} ta=${ta} tb=${tb}`;
            const c = atEveryThreadCount(name, mode, isa, () => {
              const c = new Float32Array(batch * m * n).fill(NaN);
              lib.bmm(a, b, c, batch, m, k, n, ta, tb, sa, sb);
              return c;
            });
            for (let i = 0; i < c.length; i++) {
              const err = Math.abs(c[i] - ref.sum[i]);
              if (!(err <= tol * ref.abs[i])) {
                throw new Error(
                  `${name} [${mode}, ${isa}]: element ${i} is ${c[i]}, want ${ref.sum[i]} ` +
                    `(error ${err / (U * ref.abs[i])} U sum|ab|)`,
                );
              }
            }
          }
        }
      }
    }
  } finally {
    reset();
  }
});

Deno.test("native bf16: differs from the float32 product by the inputs' rounding", () => {
  const m = 48, k = 200, n = 70;
  const a = rand(m * k, 3), b = rand(k * n, 4);
  const exact = reference(a, b, 1, m, k, n, false, true, 0, 0, (x) => x);
  try {
    lib.setPrecision("fp32");
    const c32 = new Float32Array(m * n);
    lib.bmm(a, b, c32, 1, m, k, n, false, true, 0, 0);
    for (const [mode, isa] of paths()) {
      lib.setIsa(isa);
      lib.setPrecision(mode);
      const c = new Float32Array(m * n);
      lib.bmm(a, b, c, 1, m, k, n, false, true, 0, 0);
      // Each input moves by at most 2^-9 of itself, each product by at most (2^-8 + 2^-18) of
      // itself; both products add their float32 sums' errors (see above; k U sum|ab| bounds them
      // for sure). And the rounding must show: some element moves by more than 2^-14 sum|ab|
      // (random-sign input errors of 2^-9 over k = 200 terms: ~2^-13 typically), which two
      // float32 sums of the same products never do (within 2 k U sum|ab| ~ 2^-15, in fact ~U).
      let most = 0;
      for (let i = 0; i < c.length; i++) {
        const d = Math.abs(c[i] - c32[i]) / exact.abs[i];
        assert(d <= 2 ** -8 + 2 ** -18 + 2 * k * U, `${mode} [${isa}]: element ${i} moved ${d}`);
        most = Math.max(most, d);
      }
      assert(most > 2 ** -14, `${mode} [${isa}]: no element moved more than ${most} sum|ab|`);
    }
  } finally {
    reset();
  }
});

Deno.test("native peak loop: the FLOPs it counts are the work it does, on every path", () => {
  // Each path's loop by hand: float32 keeps 2 MR accumulators of one vector each (MR 12 on
  // AVX-512, 6 on AVX2 and SSE2; 16, 8, 4 lanes) and does acc = acc * a + b a step (2 FLOPs a
  // lane); VDPBF16PS keeps 24 zmm and adds a * b + a * b a lane (4 FLOPs); AMX four 16 x 16
  // tiles, each += a 16 x 32 by 32 x 16 product (32 a b a lane, 16384 FLOPs a tile).
  // Accumulator j starts at j. Every value below is exact in float32.
  const iters = 13, a = 0.5, b = 1.5;
  const lanes: Record<IsaName, number> = { base: 4, avx2: 8, avx512: 16 };
  const fp32Final = (j: number) => {
    let acc = j;
    for (let i = 0; i < iters; i++) acc = acc * a + b;
    return acc;
  };
  const sumOver = (accs: number, perLane: number, final: (j: number) => number) =>
    Array.from({ length: accs }, (_, j) => perLane * final(j)).reduce((s, x) => s + x, 0);
  try {
    for (const isa of ISAS) {
      lib.setIsa(isa);
      const accs = isa === "avx512" ? 24 : 12, l = lanes[isa];
      for (const mode of ["fp32", "bf16-emulated"] as const) {
        assertEquals(lib.peakCheck(mode, iters, a, b), {
          flops: 2 * accs * l * iters,
          sum: sumOver(accs, l, fp32Final),
        }, `${isa} ${mode}`);
      }
    }
    lib.setIsa(ISAS[ISAS.length - 1]);
    const hw: Record<string, { accs: number; lanes: number; perStep: number; flops: number }> = {
      "bf16-avx512bf16": { accs: 24, lanes: 16, perStep: 2 * a * b, flops: 4 * 24 * 16 },
      "bf16-amx": { accs: 4, lanes: 256, perStep: 32 * a * b, flops: 4 * 16384 },
    };
    for (const [mode, p] of Object.entries(hw)) {
      const got = lib.peakCheck(mode as GemmMode, iters, a, b);
      if (!BF16_MODES.includes(mode as GemmMode)) {
        assertEquals(got, null, `${mode}: this CPU lacks it`);
        assertEquals(lib.peakGflops(mode as GemmMode, 0.01), null);
        continue;
      }
      assertEquals(got, {
        flops: p.flops * iters,
        sum: sumOver(p.accs, p.lanes, (j) => j + iters * p.perStep),
      }, mode);
    }
    for (const mode of ["fp32", ...BF16_MODES] as GemmMode[]) {
      const g = lib.peakGflops(mode, 0.01);
      assert(g !== null && g > 0, `${mode}: ${g} GFLOP/s`);
    }
  } finally {
    reset();
  }
});
