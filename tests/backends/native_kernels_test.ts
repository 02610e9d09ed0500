// The C kernels of lib/backends/native, called directly: each against float64 loops written
// here (and finite differences for the gradients), on every instruction set this CPU has (the
// AVX-512, AVX2 + FMA and SSE2 builds), at sizes that cover full vectors, remainders and
// padded tails, and bit-identical at 1, 2 and 3 threads (sizes large enough to split into
// several tasks, so that the threads really share the work).
import { assert, assertEquals, assertThrows } from "@std/assert";
import { ISA_NAMES, type IsaName } from "../../lib/backends/native/ffi.ts";
import { privateNative } from "../_helpers/native.ts";
import { erf } from "../_helpers/erf.ts";
import { assertSameBits, assertSameHalves, bf16Halves } from "../_helpers/numeric.ts";

// A private copy of the library: this file switches its instruction set and thread count.
const { lib, isas: ISAS } = await privateNative("vitssl-native-test-");
const best = ISA_NAMES.indexOf(lib.isaSupported());
const THREADS = [1, 2, 3];

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

/** Max |got - want| / (atol + rtol |want|) must be <= 1. */
function close(
  name: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  atol: number,
  rtol = atol,
) {
  assertEquals(got.length, want.length, `${name}: length`);
  for (let i = 0; i < got.length; i++) {
    if (got[i] === want[i] || (Number.isNaN(got[i]) && Number.isNaN(want[i]))) continue;
    const err = Math.abs(got[i] - want[i]);
    if (!(err <= atol + rtol * Math.abs(want[i]))) {
      throw new Error(`${name}: element ${i} is ${got[i]}, want ${want[i]} (error ${err})`);
    }
  }
}

/**
 * Runs `f` (which fills fresh outputs and returns them) on every instruction set and thread
 * count: results must be bit-identical across thread counts; `check` sees each set's result.
 */
function everyPath(
  name: string,
  f: () => Float32Array[],
  check: (out: Float32Array[], isa: IsaName) => void,
) {
  try {
    for (const isa of ISAS) {
      lib.setIsa(isa);
      let first: Float32Array[] | undefined;
      for (const t of THREADS) {
        lib.setThreads(t);
        const out = f();
        if (!first) {
          first = out;
          check(out, isa);
        } else {
          out.forEach((o, j) => {
            const a = new Uint32Array(o.buffer, o.byteOffset, o.length);
            const b = new Uint32Array(first![j].buffer, first![j].byteOffset, o.length);
            for (let i = 0; i < a.length; i++) {
              if (a[i] !== b[i]) {
                throw new Error(
                  `${name} [${isa}]: output ${j}[${i}] differs at ${t} threads: ${o[i]} vs ${
                    first![j][i]
                  }`,
                );
              }
            }
          });
        }
      }
    }
  } finally {
    lib.setIsa(lib.isaSupported());
    lib.setThreads(1);
  }
}

Deno.test("native: the library reports its instruction sets and threads", () => {
  assert(ISAS.length >= 1 && ISAS[0] === "base");
  if (Deno.build.arch === "x86_64") assert(ISAS.includes("avx2") || best === 0);
  assertEquals(lib.setThreads(3), 3);
  assertEquals(lib.threads(), 3);
  lib.setThreads(1);
  assert(lib.cpus() >= 1);
});

Deno.test("native: matmul, every transpose, against float64 (block and tile remainders)", () => {
  // m, k, n around the tiles: MR 6/12, NR 8/16/32, KC 256, MC 48/96; and a batch.
  const sizes: [number, number, number, number][] = [
    [1, 1, 1, 1],
    [1, 7, 33, 1],
    [13, 300, 37, 1],
    [97, 257, 65, 1],
    [25, 40, 17, 3],
    [200, 96, 130, 1],
  ];
  for (const [m, k, n, batch] of sizes) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        const a = rand(batch * m * k, m + k), b = rand(batch * k * n, n + 7);
        const want = new Float64Array(batch * m * n);
        for (let q = 0; q < batch; q++) {
          for (let i = 0; i < m; i++) {
            for (let j = 0; j < n; j++) {
              let s = 0;
              for (let p = 0; p < k; p++) {
                s += a[q * m * k + (ta ? p * m + i : i * k + p)] *
                  b[q * k * n + (tb ? j * k + p : p * n + j)];
              }
              want[q * m * n + i * n + j] = s;
            }
          }
        }
        everyPath(
          `matmul ${m}x${k}x${n}`,
          () => {
            const c = new Float32Array(batch * m * n).fill(NaN);
            lib.bmm(a, b, c, batch, m, k, n, ta, tb, m * k, k * n);
            return [c];
          },
          ([c], isa) =>
            close(
              `matmul ${m}x${k}x${n} ta=${ta} tb=${tb} [${isa}]`,
              c,
              want,
              1e-5 * Math.sqrt(k),
              1e-5,
            ),
        );
      }
    }
  }
  // A shared right operand (stride 0) and a large product (threads split its tiles).
  const [m, k, n] = [300, 200, 100];
  const a = rand(2 * m * k, 1), b = rand(k * n, 2);
  everyPath("matmul shared b", () => {
    const c = new Float32Array(2 * m * n);
    lib.bmm(a, b, c, 2, m, k, n, false, false, m * k, 0);
    return [c];
  }, ([c]) => {
    for (const q of [0, 1]) {
      for (const [i, j] of [[0, 0], [m - 1, n - 1], [123, 45]]) {
        let s = 0;
        for (let p = 0; p < k; p++) s += a[q * m * k + i * k + p] * b[p * n + j];
        close("matmul shared b", [c[q * m * n + i * n + j]], [s], 1e-4);
      }
    }
  });
});

Deno.test("native: binary ops with broadcasting, unary ops", () => {
  const s = [3, 5, 7, 19]; // 19: vectors of 16/8/4 plus a remainder
  const a = rand(3 * 5 * 7 * 19, 3), b = rand(5 * 1 * 19, 4);
  // out[i0,i1,i2,i3] = a[i0,i1,i2,i3] op b[i1,0,i3]
  const meta = Int32Array.from([...s, 5 * 7 * 19, 7 * 19, 19, 1, 0, 19, 0, 1]);
  const fns: Array<(x: number, y: number) => number> = [
    (x, y) => x + y,
    (x, y) => x - y,
    (x, y) => x * y,
    (x, y) => x / y,
    (x, y) => Math.max(x, y),
    (x, y) => Math.min(x, y),
    (x, y) => (x - y) ** 2,
  ];
  fns.forEach((fn, op) => {
    const want = new Float64Array(a.length);
    for (let i0 = 0; i0 < 3; i0++) {
      for (let i1 = 0; i1 < 5; i1++) {
        for (let i2 = 0; i2 < 7; i2++) {
          for (let i3 = 0; i3 < 19; i3++) {
            const o = ((i0 * 5 + i1) * 7 + i2) * 19 + i3;
            want[o] = Math.fround(fn(a[o], b[i1 * 19 + i3]));
          }
        }
      }
    }
    everyPath(`binary ${op}`, () => {
      const out = new Float32Array(a.length);
      lib.binary(op, a, b, out, meta);
      return [out];
    }, ([out]) => close(`binary ${op}`, out, want, 0)); // correctly rounded: exact
  });
  // A scalar right operand.
  const scalarMeta = Int32Array.from([1, 1, 1, a.length, 0, 0, 0, 1, 0, 0, 0, 0]);
  everyPath("binary scalar", () => {
    const out = new Float32Array(a.length);
    lib.binary(2, a, new Float32Array([3]), out, scalarMeta);
    return [out];
  }, ([out]) => close("binary scalar", out, Array.from(a, (x) => Math.fround(x * 3)), 0));
  // With zeros and a NaN among them: step keeps NaN and sends 0 to alpha.
  const x = rand(1000, 5, 3);
  x[3] = 0, x[7] = NaN;
  const step = (alpha: number) => (v: number) => v > 0 ? 1 : Number.isNaN(v) ? v : alpha;
  const unary: Array<[number, (v: number) => number, number, number?]> = [
    [0, (v) => -v, 0],
    [7, (v) => v * 2.5, 0, 2.5],
    [8, step(0), 0, 0],
    [8, step(-1), 0, -1],
    [1, (v) => v * v, 0],
    [2, (v) => Math.sqrt(Math.abs(v)), 0],
    [4, (v) => Math.max(v, 0), 0],
    [5, Math.exp, 1e-7],
    [6, Math.abs, 0],
    [9, (v) => 1 / v, 0],
    [10, Math.floor, 0],
  ];
  for (const [op, fn, tol, alpha = 0] of unary) {
    const xin = op === 2 ? x.map(Math.abs) : x;
    everyPath(`unary ${op}`, () => {
      const y = new Float32Array(xin.length);
      lib.unary(op, xin, y, xin.length, alpha);
      return [y];
    }, ([y]) => close(`unary ${op}`, y, Array.from(xin, (v) => Math.fround(fn(v))), 0, tol));
  }
});

Deno.test("native: sums over rows and columns, transposes, strided copies", () => {
  for (const [rows, cols] of [[1, 1], [37, 300], [1000, 19], [5, 20000], [40000, 7]]) {
    const x = rand(rows * cols, rows + cols);
    const rs = new Float64Array(rows), cs = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) rs[r] += x[r * cols + c], cs[c] += x[r * cols + c];
    }
    everyPath(`sums ${rows}x${cols}`, () => {
      const a = new Float32Array(rows), b = new Float32Array(cols), m = new Float32Array(cols);
      lib.sumRows(x, a, rows, cols, 1);
      lib.sumCols(x, b, rows, cols, 1);
      lib.sumCols(x, m, rows, cols, rows);
      return [a, b, m];
    }, ([a, b, m]) => {
      close("sum_rows", a, rs, 1e-6, 1e-6);
      close("sum_cols", b, cs, 1e-6, 1e-6);
      close("mean_cols", m, Array.from(cs, (v) => v / rows), 1e-6, 1e-6);
    });
    // In float32, row after row from +0 (tfjs's Tile gradient): exactly the sequence of roundings
    // of a JS loop; a column of -0 sums to +0 (0 + -0), a NaN stays NaN.
    const xs = Float32Array.from(x);
    if (cols > 2) xs[1] = NaN;
    for (let r = 0; r < rows && cols > 2; r++) xs[r * cols + 2] = -0;
    const seq = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) seq[c] = Math.fround(seq[c] + xs[r * cols + c]);
    }
    everyPath(`float32 column sums ${rows}x${cols}`, () => {
      const out = new Float32Array(cols).fill(7);
      lib.sumColsF32(xs, out, rows, cols);
      return [out];
    }, ([out]) => {
      for (let c = 0; c < cols; c++) {
        if (!Object.is(out[c], seq[c])) {
          throw new Error(`sum_cols_f32 ${c}: ${out[c]} vs ${seq[c]}`);
        }
      }
    });
  }
  for (
    const [batch, rows, cols, inner] of [[1, 33, 65, 1], [2, 17, 4, 32], [3, 5, 7, 3], [
      1,
      3000,
      50,
      1,
    ]]
  ) {
    const n = batch * rows * cols * inner, x = rand(n, n);
    const want = new Float32Array(n);
    for (let b = 0; b < batch; b++) {
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          for (let i = 0; i < inner; i++) {
            want[((b * cols + c) * rows + r) * inner + i] =
              x[((b * rows + r) * cols + c) * inner + i];
          }
        }
      }
    }
    everyPath("transpose", () => {
      const y = new Float32Array(n);
      lib.transpose(x, y, batch, rows, cols, inner);
      return [y];
    }, ([y]) => close("transpose", y, want, 0));
  }
  const src = rand(10 * 12, 9);
  everyPath("copy_rows", () => {
    const dst = new Float32Array(10 * 20).fill(-1);
    lib.copyRows(src, 2, dst, 3, 10, 7, 12, 20);
    return [dst];
  }, ([dst]) => {
    for (let r = 0; r < 10; r++) {
      for (let i = 0; i < 20; i++) {
        const want = i >= 3 && i < 10 ? src[2 + r * 12 + i - 3] : -1;
        assertEquals(dst[r * 20 + i], want);
      }
    }
  });
});

// ---- float64 references of the fused kernels --------------------------------------------------
function lnRef(
  x: ArrayLike<number>,
  g: ArrayLike<number>,
  b: ArrayLike<number>,
  rows: number,
  d: number,
  eps: number,
) {
  const y = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let mu = 0, v = 0;
    for (let j = 0; j < d; j++) mu += x[r * d + j];
    mu /= d;
    for (let j = 0; j < d; j++) v += (x[r * d + j] - mu) ** 2;
    const rs = 1 / Math.sqrt(v / d + eps);
    for (let j = 0; j < d; j++) y[r * d + j] = (x[r * d + j] - mu) * rs * g[j] + b[j];
  }
  return y;
}
const geluRef = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));

/** Central differences of sum(w * f(x)) with respect to x (float64). */
function numGrad(
  f: (x: Float64Array) => Float64Array,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  h = 1e-4,
) {
  const xd = Float64Array.from(x), g = new Float64Array(x.length);
  const loss = () => f(xd).reduce((s, v, i) => s + v * w[i], 0);
  for (let i = 0; i < x.length; i++) {
    const x0 = xd[i];
    xd[i] = x0 + h;
    const up = loss();
    xd[i] = x0 - h;
    const down = loss();
    xd[i] = x0;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

Deno.test("native: LayerNorm and its gradient against float64 and finite differences", () => {
  for (const [rows, d] of [[3, 7], [5, 37], [65, 128], [2, 200], [2100, 70]]) {
    const x = rand(rows * d, d, 2),
      g = rand(d, d + 1),
      b = rand(d, d + 2),
      dy = rand(rows * d, d + 3),
      dres = rand(rows * d, d + 4);
    const eps = 1e-6;
    const want = lnRef(x, g, b, rows, d, eps);
    const small = rows * d <= 400;
    const dx = small ? numGrad((xx) => lnRef(xx, g, b, rows, d, eps), x, dy) : undefined;
    const wantDg = new Float64Array(d), wantDb = new Float64Array(d);
    const xh = lnRef(x, Array(d).fill(1), Array(d).fill(0), rows, d, eps);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < d; j++) {
        wantDg[j] += dy[r * d + j] * xh[r * d + j], wantDb[j] += dy[r * d + j];
      }
    }
    everyPath(`layernorm ${rows}x${d}`, () => {
      const y = new Float32Array(rows * d),
        gx = new Float32Array(rows * d),
        gg = new Float32Array(d),
        gb = new Float32Array(d);
      lib.layernorm(x, g, b, y, rows, d, eps);
      lib.layernormGrad(dy, x, g, null, gx, gg, gb, rows, d, eps);
      // With a residual's gradient added in the same pass.
      const rx = new Float32Array(rows * d), rg = new Float32Array(d), rb = new Float32Array(d);
      lib.layernormGrad(dy, x, g, dres, rx, rg, rb, rows, d, eps);
      return [y, gx, gg, gb, rx, rg, rb];
    }, ([y, gx, gg, gb, rx, rg, rb], isa) => {
      // dres + dx as one float32 add, and the same parameter gradients.
      for (let i = 0; i < rows * d; i++) {
        const want = Math.fround(dres[i] + gx[i]);
        if (rx[i] !== want) throw new Error(`layernorm dx + dres ${i} [${isa}]: ${rx[i]}, ${want}`);
      }
      assertEquals([...rg], [...gg], `layernorm dgamma with dres [${isa}]`);
      assertEquals([...rb], [...gb], `layernorm dbeta with dres [${isa}]`);
      close(`layernorm ${rows}x${d} [${isa}]`, y, want, 1e-5);
      if (dx) close(`layernorm dx ${rows}x${d} [${isa}]`, gx, dx, 1e-4, 1e-3);
      close(`layernorm dgamma [${isa}]`, gg, wantDg, 1e-4, 1e-4);
      close(`layernorm dbeta [${isa}]`, gb, wantDb, 1e-4, 1e-4);
    });
  }
});

/**
 * BatchNorm over the rows of x [rows, d] in float64: y, mean, biased variance, and the gradient of
 * sum(y * dy) + sum(mean * dmean) + sum(var * dvar) with respect to x, g and b, by differentiating
 * the three outputs by hand (checked against finite differences below).
 */
function bnRef(x: Float32Array, g: Float32Array, b: Float32Array, rows: number, d: number) {
  const eps = 1e-5;
  const mean = new Float64Array(d), vr = new Float64Array(d), y = new Float64Array(rows * d);
  for (let c = 0; c < d; c++) {
    let s = 0, q = 0;
    for (let r = 0; r < rows; r++) s += x[r * d + c];
    mean[c] = s / rows;
    for (let r = 0; r < rows; r++) q += (x[r * d + c] - mean[c]) ** 2;
    vr[c] = q / rows;
    for (let r = 0; r < rows; r++) {
      y[r * d + c] = (x[r * d + c] - mean[c]) / Math.sqrt(vr[c] + eps) * g[c] + b[c];
    }
  }
  const grad = (dy: Float32Array, dm: Float32Array, dv: Float32Array) => {
    const dx = new Float64Array(rows * d), dg = new Float64Array(d), db = new Float64Array(d);
    for (let c = 0; c < d; c++) {
      const rstd = 1 / Math.sqrt(vr[c] + eps);
      let sdy = 0, sdyx = 0;
      for (let r = 0; r < rows; r++) {
        sdy += dy[r * d + c];
        sdyx += dy[r * d + c] * (x[r * d + c] - mean[c]) * rstd;
      }
      dg[c] = sdyx, db[c] = sdy;
      for (let r = 0; r < rows; r++) {
        const xc = x[r * d + c] - mean[c];
        dx[r * d + c] = rstd * g[c] * (dy[r * d + c] - sdy / rows - xc * rstd * sdyx / rows) +
          dm[c] / rows + 2 * dv[c] * xc / rows;
      }
    }
    return { dx, dg, db };
  };
  return { y, mean, vr, grad };
}

Deno.test("native: BatchNorm over the batch and its gradient against float64 and finite differences", () => {
  // The hand-differentiated float64 gradient against central differences of the float64 forward.
  {
    const rows = 5, d = 3, x = rand(rows * d, 91, 2), g = rand(d, 92), b = rand(d, 93);
    const dy = rand(rows * d, 94), dm = rand(d, 95), dv = rand(d, 96);
    const f = (xx: Float32Array) => {
      const o = bnRef(xx, g, b, rows, d);
      let s = 0;
      o.y.forEach((v, i) => s += v * dy[i]);
      for (let c = 0; c < d; c++) s += o.mean[c] * dm[c] + o.vr[c] * dv[c];
      return s;
    };
    const { dx } = bnRef(x, g, b, rows, d).grad(dy, dm, dv);
    for (let i = 0; i < rows * d; i++) {
      const h = 1e-3, xp = Float64Array.from(x), xm = Float64Array.from(x);
      xp[i] += h, xm[i] -= h;
      const fd = (f(xp as unknown as Float32Array) - f(xm as unknown as Float32Array)) / (2 * h);
      assert(Math.abs(fd - dx[i]) < 1e-5 * (1 + Math.abs(fd)), `dx[${i}] ${dx[i]} vs ${fd}`);
    }
  }
  // The kernels: tails of the column vectors (d % 16, d % 8, d % 4), one row, several tasks.
  for (const [rows, d] of [[1, 5], [7, 3], [128, 37], [64, 1024], [256, 1030]]) {
    const x = rand(rows * d, rows + d, 3), g = rand(d, d + 1), b = rand(d, d + 2);
    const dy = rand(rows * d, rows * d), dm = rand(d, 7 * d), dv = rand(d, 9 * d);
    const ref = bnRef(x, g, b, rows, d), want = ref.grad(dy, dm, dv);
    const zeros = new Float32Array(d), plain = bnRef(x, zeros.map(() => 1), zeros, rows, d);
    const noAffine = plain.grad(dy, zeros, zeros);
    everyPath(`batchnorm ${rows}x${d}`, () => {
      const y = new Float32Array(rows * d), mean = new Float32Array(d), vr = new Float32Array(d);
      lib.batchnorm(x, g, b, y, mean, vr, rows, d, 1e-5);
      const dx = new Float32Array(rows * d), dg = new Float32Array(d), db = new Float32Array(d);
      lib.batchnormGrad(dy, x, g, mean, vr, dm, dv, dx, dg, db, rows, d, 1e-5);
      // No affine transform and no gradients of the statistics: gamma 1, beta 0, dmean = dvar = 0.
      const y1 = new Float32Array(rows * d), dx1 = new Float32Array(rows * d);
      lib.batchnorm(x, null, null, y1, mean.slice(), vr.slice(), rows, d, 1e-5);
      lib.batchnormGrad(dy, x, null, mean, vr, null, null, dx1, null, null, rows, d, 1e-5);
      return [y, mean, vr, dx, dg, db, y1, dx1];
    }, ([y, mean, vr, dx, dg, db, y1, dx1], isa) => {
      const tag = `batchnorm ${rows}x${d} [${isa}]`;
      // float32 sums over the rows: errors grow with rows; outputs of size ~1-10.
      const tol = 2e-6 * Math.sqrt(rows) + 2e-6;
      close(`${tag} mean`, mean, ref.mean, tol);
      close(`${tag} var`, vr, ref.vr, tol);
      close(`${tag} y`, y, ref.y, 20 * tol);
      close(`${tag} dx`, dx, want.dx, 20 * tol);
      close(`${tag} dg`, dg, want.dg, 5 * tol * rows);
      close(`${tag} db`, db, want.db, tol * rows);
      close(`${tag} y, no affine`, y1, plain.y, 20 * tol);
      close(`${tag} dx, no affine`, dx1, noAffine.dx, 20 * tol);
    });
  }
});

Deno.test("native: GELU and its gradient against float64 erf and finite differences", () => {
  for (const n of [1, 5, 16, 37, 150001]) {
    const x = rand(n, n, 5), dy = rand(n, n + 1);
    const want = Array.from(x, geluRef);
    const wantDx = Array.from(x, (v, i) => dy[i] * (geluRef(v + 1e-5) - geluRef(v - 1e-5)) / 2e-5);
    everyPath(`gelu ${n}`, () => {
      const y = new Float32Array(n), dx = new Float32Array(n);
      lib.gelu(x, y, n);
      lib.geluGrad(dy, x, dx, n);
      return [y, dx];
    }, ([y, dx], isa) => {
      close(`gelu ${n} [${isa}]`, y, want, 2e-6);
      close(`gelu grad ${n} [${isa}]`, dx, wantDx, 1e-5);
    });
  }
});

function attentionRef(
  qkv: ArrayLike<number>,
  B: number,
  T: number,
  H: number,
  hd: number,
  scale: number,
) {
  const D = H * hd, out = new Float64Array(B * T * D), probs = new Float64Array(B * H * T * T);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        const s = new Float64Array(T);
        for (let j = 0; j < T; j++) {
          for (let c = 0; c < hd; c++) {
            s[j] += qkv[(b * T + i) * 3 * D + h * hd + c] *
              qkv[(b * T + j) * 3 * D + D + h * hd + c];
          }
          s[j] *= scale;
        }
        const mx = Math.max(...s);
        let z = 0;
        for (let j = 0; j < T; j++) z += s[j] = Math.exp(s[j] - mx);
        for (let j = 0; j < T; j++) {
          const p = s[j] / z;
          probs[((b * H + h) * T + i) * T + j] = p;
          for (let c = 0; c < hd; c++) {
            out[(b * T + i) * D + h * hd + c] += p * qkv[(b * T + j) * 3 * D + 2 * D + h * hd + c];
          }
        }
      }
    }
  }
  return { out, probs };
}

Deno.test("native: attention and its gradient against float64 and finite differences", () => {
  for (
    // B = 17: one task per sequence, its heads in turn (16 sequences or more); fewer: per head.
    const [B, T, H, hd] of [
      [2, 5, 2, 4],
      [1, 17, 3, 8],
      [2, 9, 1, 20],
      [1, 16, 2, 4],
      [2, 1, 1, 4],
      [17, 5, 2, 8],
    ]
  ) {
    const D = H * hd, scale = 1 / Math.sqrt(hd);
    const qkv = rand(B * T * 3 * D, T + hd, 1.5),
      dout = rand(B * T * D, 11),
      dprobs = rand(B * H * T * T, 12);
    const { out, probs } = attentionRef(qkv, B, T, H, hd, scale);
    // d/dqkv of sum(dout * out) + sum(dprobs * probs).
    const f = (x: Float64Array) => {
      const r = attentionRef(x, B, T, H, hd, scale);
      const all = new Float64Array(r.out.length + r.probs.length);
      all.set(r.out);
      all.set(r.probs, r.out.length);
      return all;
    };
    const w = new Float64Array(out.length + probs.length);
    w.set(dout);
    w.set(dprobs, out.length);
    const want = numGrad(f, qkv, w, 1e-5);
    // dprobs null (probabilities without a consumer): d/dqkv of sum(dout * out) alone.
    const wantOut = numGrad(f, qkv, w.map((v, i) => i < out.length ? v : 0), 1e-5);
    everyPath(`attention ${B}x${T}x${H}x${hd}`, () => {
      const o = new Float32Array(out.length),
        p = new Float32Array(probs.length),
        dq = new Float32Array(qkv.length),
        dq0 = new Float32Array(qkv.length);
      lib.attention(qkv, o, p, B, T, H, hd, scale);
      // out stored as bf16 (for the projection's bf16 product): the float32 out rounded.
      const o16 = new Uint16Array(out.length).fill(0xffff), p16 = new Float32Array(probs.length);
      lib.attention(qkv, o16, p16, B, T, H, hd, scale, true);
      assertSameHalves(`attention out as bf16 ${B}x${T}x${H}x${hd}`, o16, bf16Halves(o));
      assertSameBits(`attention probs beside a bf16 out ${B}x${T}x${H}x${hd}`, p16, p);
      lib.attentionGrad(dout, dprobs, qkv, p, dq, B, T, H, hd, scale);
      lib.attentionGrad(dout, null, qkv, p, dq0, B, T, H, hd, scale);
      return [o, p, dq, dq0];
    }, ([o, p, dq, dq0], isa) => {
      close(`attention out [${isa}]`, o, out, 2e-6, 1e-5);
      close(`attention probs [${isa}]`, p, probs, 2e-6, 1e-5);
      close(`attention dqkv [${isa}]`, dq, want, 1e-4, 1e-3);
      close(`attention dqkv without dprobs [${isa}]`, dq0, wantOut, 1e-4, 1e-3);
    });
  }
});

Deno.test("native: AdamW and EMA equal the unfused float32 operations bit for bit", () => {
  const n = 1037,
    p = rand(n, 1),
    g = rand(n, 2),
    m = rand(n, 3, 0.1),
    v = rand(n, 4, 0.01).map(Math.abs);
  const c = {
    c1m: 0.1,
    b2: 0.999,
    c2: Math.fround(1 - 0.999),
    sbc2: Math.fround(Math.sqrt(1 - 0.999 ** 3)),
    eps: 1e-8,
    decay: Math.fround(1 - 1e-3 * 0.1),
    step: Math.fround(1e-3 / (1 - 0.9 ** 3)),
  };
  const f = Math.fround;
  for (const hasDecay of [true, false]) {
    const wp = new Float32Array(n), wm = new Float32Array(n), wv = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const mi = f(m[i] + f(f(g[i] - m[i]) * f(c.c1m)));
      const vi = f(f(v[i] * f(c.b2)) + f(f(g[i] * g[i]) * c.c2));
      const denom = f(f(f(Math.sqrt(vi)) / c.sbc2) + f(c.eps));
      const pi = hasDecay ? f(p[i] * c.decay) : p[i];
      wp[i] = f(pi - f(f(mi / denom) * c.step)), wm[i] = mi, wv[i] = vi;
    }
    everyPath("adamw", () => {
      const p1 = new Float32Array(n), m1 = new Float32Array(n), v1 = new Float32Array(n);
      lib.adamw(
        p,
        g,
        m,
        v,
        p1,
        m1,
        v1,
        n,
        c.c1m,
        c.b2,
        c.c2,
        c.sbc2,
        c.eps,
        c.decay,
        c.step,
        hasDecay,
      );
      return [p1, m1, v1];
    }, ([p1, m1, v1]) => {
      close("adamw p", p1, wp, 0);
      close("adamw m", m1, wm, 0);
      close("adamw v", v1, wv, 0);
    });
  }
  const mom = 0.99;
  everyPath(
    "ema",
    () => {
      const t1 = new Float32Array(n);
      lib.ema(p, g, t1, n, mom, 1 - mom);
      return [t1];
    },
    ([t1]) => close("ema", t1, Array.from(p, (x, i) => f(f(x * f(mom)) + f(g[i] * f(1 - mom)))), 0),
  );
});

Deno.test("native: AdamW and EMA on many tensors in place equal the float32 operations bit for bit", () => {
  // Sizes: one vector and a remainder, several pool chunks (16384 floats each) and a remainder,
  // shorter than a vector, empty; decay on every other tensor.
  const sizes = [1037, 2 * 16384 + 5, 3, 0, 16];
  const c = { c1m: 0.1, b2: 0.999, c2: 0.001, sbc2: 0.05, eps: 1e-8, decay: 0.9999, step: 2e-3 };
  const f = Math.fround, fc = Object.fromEntries(Object.entries(c).map(([k, x]) => [k, f(x)]));
  const ins = sizes.map((n, j) => ({
    p: rand(n, 10 + j),
    g: rand(n, 20 + j),
    m: rand(n, 30 + j, 0.1),
    v: rand(n, 40 + j, 0.01).map(Math.abs),
    decay: j % 2 === 0,
  }));
  // Each element's float32 operations, one rounding each (as the per-tensor kernel's test).
  const want = ins.map(({ p, g, m, v, decay }) => {
    const wp = new Float32Array(p.length), wm = new Float32Array(p.length);
    const wv = new Float32Array(p.length);
    for (let i = 0; i < p.length; i++) {
      const mi = f(m[i] + f(f(g[i] - m[i]) * fc.c1m));
      const vi = f(f(v[i] * fc.b2) + f(f(g[i] * g[i]) * fc.c2));
      const denom = f(f(f(Math.sqrt(vi)) / fc.sbc2) + fc.eps);
      const pi = decay ? f(p[i] * fc.decay) : p[i];
      wp[i] = f(pi - f(f(mi / denom) * fc.step)), wm[i] = mi, wv[i] = vi;
    }
    return [wp, wm, wv];
  });
  everyPath("adamwInPlace", () => {
    const [p, m, v] = (["p", "m", "v"] as const).map((k) => ins.map((x) => x[k].slice()));
    const g = ins.map((x) => x.g);
    lib.adamwInPlace(p, g, m, v, ins.map((x) => x.decay), fc as typeof c);
    return [p, m, v].flatMap((group) => group);
  }, (out) => {
    const k = sizes.length;
    want.forEach(([wp, wm, wv], j) => {
      close(`adamw p${j}`, out[j], wp, 0);
      close(`adamw m${j}`, out[k + j], wm, 0);
      close(`adamw v${j}`, out[2 * k + j], wv, 0);
    });
  });
  const mom = 0.99;
  everyPath(
    "emaInPlace",
    () => {
      const t = ins.map((x) => x.p.slice());
      lib.emaInPlace(t, ins.map((x) => x.g), mom, 1 - mom);
      return t;
    },
    (out) =>
      ins.forEach(({ p, g }, j) =>
        close(
          `ema ${j}`,
          out[j],
          Array.from(p, (x, i) => f(f(x * f(mom)) + f(g[i] * f(1 - mom)))),
          0,
        )
      ),
  );
  // A tensor whose size the arrays disagree on is refused before the library sees it.
  assertThrows(
    () => lib.emaInPlace([new Float32Array(4)], [new Float32Array(3)], mom, 1 - mom),
    Error,
    "3 floats, not 4",
  );
});

Deno.test("native: augmentation kernels (clip, gather, depthwise conv, crop-and-resize) against float64", () => {
  const x = rand(2 * 9 * 8 * 3, 21);
  everyPath("clip", () => {
    const y = new Float32Array(x.length);
    lib.clip(x, y, x.length, -0.3, 0.4);
    return [y];
  }, ([y]) => close("clip", y, Array.from(x, (v) => Math.min(Math.max(v, -0.3), 0.4)), 1e-7));
  // Gather: rows reversed, columns 2, 0, 0 of x [6, 4].
  const g = rand(24, 22);
  everyPath("gather", () => {
    const y = new Float32Array(18);
    lib.gatherIdx(
      g,
      y,
      2,
      Int32Array.from([6, 3]),
      Int32Array.from([20, 16, 12, 8, 4, 0, 2, 0, 0]),
    );
    return [y];
  }, ([y]) => {
    for (let r = 0; r < 6; r++) {
      [2, 0, 0].forEach((c, j) => assertEquals(y[r * 3 + j], g[(5 - r) * 4 + c]));
    }
  });
  // Depthwise conv [2, 9, 8, 3] * [3, 2, 3, 2], stride 2, pad top 1 left 0 -> [2, 5, 4, 6].
  const f = rand(3 * 2 * 3 * 2, 23);
  const [B, H, W, C, M, fh, fw, oh, ow] = [2, 9, 8, 3, 2, 3, 2, 5, 4];
  const want = new Float64Array(B * oh * ow * C * M);
  for (let b = 0; b < B; b++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        for (let c = 0; c < C; c++) {
          for (let q = 0; q < M; q++) {
            let s = 0;
            for (let fy = 0; fy < fh; fy++) {
              for (let fx = 0; fx < fw; fx++) {
                const iy = oy * 2 - 1 + fy, ix = ox * 2 + fx;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
                  s += x[((b * H + iy) * W + ix) * C + c] * f[((fy * fw + fx) * C + c) * M + q];
                }
              }
            }
            want[(((b * oh + oy) * ow + ox) * C + c) * M + q] = s;
          }
        }
      }
    }
  }
  everyPath("dwconv", () => {
    const y = new Float32Array(want.length);
    lib.dwconv(x, f, y, Int32Array.from([B, H, W, C, M, fh, fw, oh, ow, 2, 2, 1, 1, 1, 0]));
    return [y];
  }, ([y]) => close("dwconv", y, want, 1e-6));
  // The row-wise path: stride 1, no padding, multiplier 1: [2, 9, 8, 3] * [2, 3, 3, 1] -> [2, 8, 6, 3].
  const f1 = rand(2 * 3 * 3, 24), want1 = new Float64Array(2 * 8 * 6 * 3);
  for (let b = 0; b < 2; b++) {
    for (let oy = 0; oy < 8; oy++) {
      for (let ox = 0; ox < 6; ox++) {
        for (let c = 0; c < 3; c++) {
          let s = 0;
          for (let fy = 0; fy < 2; fy++) {
            for (let fx = 0; fx < 3; fx++) {
              s += x[((b * 9 + oy + fy) * 8 + ox + fx) * 3 + c] * f1[(fy * 3 + fx) * 3 + c];
            }
          }
          want1[((b * 8 + oy) * 6 + ox) * 3 + c] = s;
        }
      }
    }
  }
  everyPath("dwconv rows", () => {
    const y = new Float32Array(want1.length);
    lib.dwconv(x, f1, y, Int32Array.from([2, 9, 8, 3, 1, 2, 3, 8, 6, 1, 1, 1, 1, 0, 0]));
    return [y];
  }, ([y]) => close("dwconv rows", y, want1, 1e-6));
  // Crop-and-resize: one box inside, one partly outside (extrapolated), one of a missing image.
  const boxes = Float32Array.from([0.1, 0.2, 0.8, 0.9, -0.2, 0, 1.1, 0.5, 0, 0, 1, 1]);
  const ind = Int32Array.from([0, 1, 7]);
  const [ch, cw] = [5, 4];
  const crop = new Float64Array(3 * ch * cw * C);
  for (let n = 0; n < 3; n++) {
    const [y1, x1, y2, x2] = boxes.slice(n * 4, n * 4 + 4);
    for (let yy = 0; yy < ch; yy++) {
      for (let xx = 0; xx < cw; xx++) {
        for (let c = 0; c < C; c++) {
          const o = ((n * ch + yy) * cw + xx) * C + c;
          if (ind[n] >= B) continue; // zeros
          const yi = y1 * (H - 1) + yy * (y2 - y1) * (H - 1) / (ch - 1);
          const xi = x1 * (W - 1) + xx * (x2 - x1) * (W - 1) / (cw - 1);
          if (yi < 0 || yi > H - 1 || xi < 0 || xi > W - 1) {
            crop[o] = 0.25;
            continue;
          }
          const at = (r: number, q: number) => x[((ind[n] * H + r) * W + q) * C + c];
          const [t0, l0] = [Math.floor(yi), Math.floor(xi)],
            [t1, l1] = [Math.ceil(yi), Math.ceil(xi)];
          const top = at(t0, l0) + (at(t0, l1) - at(t0, l0)) * (xi - l0);
          const bot = at(t1, l0) + (at(t1, l1) - at(t1, l0)) * (xi - l0);
          crop[o] = top + (bot - top) * (yi - t0);
        }
      }
    }
  }
  everyPath("crop_and_resize", () => {
    const y = new Float32Array(crop.length).fill(NaN);
    lib.cropAndResize(x, boxes, ind, y, Int32Array.from([B, H, W, C, 3, ch, cw]), 0.25);
    return [y];
  }, ([y]) => close("crop_and_resize", y, crop, 1e-6));
});

/** The top `k` of each row of `x` `[rows, n]`: indices by value descending, ties by index. */
function topkRef(x: Float32Array, rows: number, n: number, k: number): Int32Array {
  const out = new Int32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * n, (r + 1) * n);
    const order = Array.from({ length: n }, (_, i) => i);
    // -0 and +0 compare equal (as tfjs's b - a): ties by index.
    order.sort((a, b) => (row[a] > row[b] ? -1 : row[a] < row[b] ? 1 : a - b));
    out.set(order.slice(0, k), r * k);
  }
  return out;
}

Deno.test("native: top-k against a sort of every row (ties, k = 1 and n, short rows, threads)", () => {
  // Row lengths below one vector, around the 4-vector blocks, long; row counts that give one
  // task or several (rows per task: max(32, 131072 / n)).
  const cases: [number, number, number[]][] = [
    [5, 1, [0, 1]],
    [3, 3, [1, 2, 3]],
    [4, 7, [1, 4, 7]],
    [33, 63, [1, 5, 63]],
    [7, 64, [1, 20, 64]],
    [2, 65, [1, 64, 65]],
    [300, 1000, [1, 20, 200, 1000]],
    [100, 5000, [20, 200]],
  ];
  for (const [rows, n, ks] of cases) {
    const r = rng(rows * 31 + n);
    // Kinds of row, by row index: random (many distinct values); 9 levels, +0 and -0 mixed (many
    // ties); ascending (every element beats the heap's root); descending; constant.
    const x = new Float32Array(rows * n);
    for (let row = 0; row < rows; row++) {
      for (let j = 0; j < n; j++) {
        const kind = row % 5, u = r();
        x[row * n + j] = kind === 0
          ? u
          : kind === 1
          ? (Math.round(u * 4) / 4 || (j % 2 ? -0 : 0))
          : kind === 2
          ? j / n
          : kind === 3
          ? -j / n
          : 0.5;
      }
    }
    for (const k of ks) {
      const name = `topk rows ${rows} n ${n} k ${k}`;
      const want = topkRef(x, rows, n, k);
      everyPath(name, () => {
        const vals = new Float32Array(rows * k).fill(NaN), idx = new Int32Array(rows * k).fill(-1);
        assert(lib.topk(x, vals, idx, rows, n, k), `${name}: reported a non-finite value`);
        return [vals, new Float32Array(idx.buffer)];
      }, ([vals, idxBits]) => {
        const idx = new Int32Array(idxBits.buffer);
        for (let i = 0; i < want.length; i++) {
          const row = Math.floor(i / k);
          if (idx[i] !== want[i] || !Object.is(vals[i], x[row * n + want[i]])) {
            throw new Error(
              `${name}: [${row}, ${i % k}] is ${vals[i]} at ${idx[i]}, want ` +
                `${x[row * n + want[i]]} at ${want[i]}`,
            );
          }
        }
      });
    }
  }
});

Deno.test("native: top-k reports a NaN or an infinity anywhere in its input", () => {
  const [rows, n, k] = [40, 300, 20];
  const x = rand(rows * n, 41);
  const vals = new Float32Array(rows * k), idx = new Int32Array(rows * k);
  assert(lib.topk(x, vals, idx, rows, n, k));
  // In the first k of a row, in the vector blocks, in the tail (300 = 20 + 4 * 16 * 4 + 24).
  for (const at of [3, 150, 299]) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (const row of [0, 35]) {
        const y = x.slice();
        y[row * n + at] = bad;
        for (const t of THREADS) {
          lib.setThreads(t);
          assertEquals(lib.topk(y, vals, idx, rows, n, k), false, `${bad} at [${row}, ${at}]`);
        }
        lib.setThreads(1);
      }
    }
  }
});
