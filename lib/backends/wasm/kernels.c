// Fused float32 kernels for tfjs-backend-wasm, compiled to WebAssembly SIMD128 by build.sh.
//
// The module imports tfjs-backend-wasm's own linear memory and works in place on tensors that
// the wasm backend allocated (pointers are the backend's `memoryOffset`s), so no data is copied.
// It must not use linear memory of its own: no globals, no static data, no stack (build.sh checks
// that the binary defines no data segment and never touches `__stack_pointer`).
//
// Every function is exported under its own name; see lib/backends/wasm/kernels.ts for the tfjs side.
#include <wasm_simd128.h>

#define EXPORT __attribute__((visibility("default")))
typedef float f32;

// ---------------------------------------------------------------------------------------------
// Batched matmul: C[b] = op(A[b]) @ op(B[b]) for b < batch, C contiguous [batch, m, n].
// A[b] starts at A + b * sa and B[b] at B + b * sb (a stride of 0 broadcasts one matrix).
// op(A) is [m, k]: A is stored [m, k] (ta = 0) or [k, m] (ta = 1); op(B) is [k, n]: B is
// stored [k, n] (tb = 0) or [n, k] (tb = 1). Sized for attention's many small products
// ([B*H, T, hd]), which tfjs-backend-wasm 4.22 runs in a scalar loop.
// ---------------------------------------------------------------------------------------------

// C[m, n] = sum_p a(i, p) B[p, :] where a(i, p) = A[i * ai + p * ap]. Blocks of 4 rows x 4
// columns of C stay in registers over the whole k loop (one B load feeds four products).
static void mm_rows(const f32* A, int ai, int ap, const f32* restrict B, f32* restrict C, int m,
                    int k, int n) {
  int n4 = n & ~3;
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const f32 *a0 = A + i * ai, *a1 = a0 + ai, *a2 = a1 + ai, *a3 = a2 + ai;
    for (int j = 0; j < n4; j += 4) {
      v128_t c0 = wasm_f32x4_splat(0.f), c1 = c0, c2 = c0, c3 = c0;
      for (int p = 0; p < k; p++) {
        v128_t b = wasm_v128_load(B + p * n + j);
        c0 = wasm_f32x4_add(c0, wasm_f32x4_mul(wasm_f32x4_splat(a0[p * ap]), b));
        c1 = wasm_f32x4_add(c1, wasm_f32x4_mul(wasm_f32x4_splat(a1[p * ap]), b));
        c2 = wasm_f32x4_add(c2, wasm_f32x4_mul(wasm_f32x4_splat(a2[p * ap]), b));
        c3 = wasm_f32x4_add(c3, wasm_f32x4_mul(wasm_f32x4_splat(a3[p * ap]), b));
      }
      wasm_v128_store(C + i * n + j, c0);
      wasm_v128_store(C + (i + 1) * n + j, c1);
      wasm_v128_store(C + (i + 2) * n + j, c2);
      wasm_v128_store(C + (i + 3) * n + j, c3);
    }
    for (int r = i; r < i + 4; r++)
      for (int j = n4; j < n; j++) {
        f32 acc = 0.f;
        for (int p = 0; p < k; p++) acc += A[r * ai + p * ap] * B[p * n + j];
        C[r * n + j] = acc;
      }
  }
  for (; i < m; i++) {
    const f32* a = A + i * ai;
    for (int j = 0; j < n4; j += 4) {
      v128_t c = wasm_f32x4_splat(0.f);
      for (int p = 0; p < k; p++)
        c = wasm_f32x4_add(c, wasm_f32x4_mul(wasm_f32x4_splat(a[p * ap]), wasm_v128_load(B + p * n + j)));
      wasm_v128_store(C + i * n + j, c);
    }
    for (int j = n4; j < n; j++) {
      f32 acc = 0.f;
      for (int p = 0; p < k; p++) acc += a[p * ap] * B[p * n + j];
      C[i * n + j] = acc;
    }
  }
}

static inline f32 hsum(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) +
         wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3);
}

// C[m, n] = A[m, k] @ B[n, k]^T: dot products of rows, four B rows per A row.
static void mm_nt(const f32* restrict A, const f32* restrict B, f32* restrict C, int m, int k,
                  int n) {
  int k4 = k & ~3;
  for (int i = 0; i < m; i++) {
    const f32* a = A + i * k;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
      const f32 *b0 = B + j * k, *b1 = b0 + k, *b2 = b1 + k, *b3 = b2 + k;
      v128_t s0 = wasm_f32x4_splat(0.f), s1 = s0, s2 = s0, s3 = s0;
      int p = 0;
      for (; p < k4; p += 4) {
        v128_t av = wasm_v128_load(a + p);
        s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(av, wasm_v128_load(b0 + p)));
        s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(av, wasm_v128_load(b1 + p)));
        s2 = wasm_f32x4_add(s2, wasm_f32x4_mul(av, wasm_v128_load(b2 + p)));
        s3 = wasm_f32x4_add(s3, wasm_f32x4_mul(av, wasm_v128_load(b3 + p)));
      }
      f32 r0 = hsum(s0), r1 = hsum(s1), r2 = hsum(s2), r3 = hsum(s3);
      for (; p < k; p++) {
        r0 += a[p] * b0[p];
        r1 += a[p] * b1[p];
        r2 += a[p] * b2[p];
        r3 += a[p] * b3[p];
      }
      C[i * n + j] = r0;
      C[i * n + j + 1] = r1;
      C[i * n + j + 2] = r2;
      C[i * n + j + 3] = r3;
    }
    for (; j < n; j++) {
      const f32* b = B + j * k;
      v128_t s = wasm_f32x4_splat(0.f);
      int p = 0;
      for (; p < k4; p += 4) s = wasm_f32x4_add(s, wasm_f32x4_mul(wasm_v128_load(a + p), wasm_v128_load(b + p)));
      f32 r = hsum(s);
      for (; p < k; p++) r += a[p] * b[p];
      C[i * n + j] = r;
    }
  }
}

// C[m, n] = A[k, m]^T @ B[n, k]^T (rare: scalar).
static void mm_tt(const f32* A, const f32* B, f32* C, int m, int k, int n) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      f32 s = 0.f;
      for (int p = 0; p < k; p++) s += A[p * m + i] * B[j * k + p];
      C[i * n + j] = s;
    }
}

EXPORT void bmm(const f32* A, const f32* B, f32* C, int batch, int m, int k, int n, int ta, int tb,
                int sa, int sb) {
  for (int b = 0; b < batch; b++) {
    const f32* a = A + b * sa;
    const f32* bb = B + b * sb;
    f32* c = C + b * m * n;
    if (!ta && !tb) mm_rows(a, k, 1, bb, c, m, k, n);
    else if (ta && !tb) mm_rows(a, 1, m, bb, c, m, k, n);
    else if (!ta && tb) mm_nt(a, bb, c, m, k, n);
    else mm_tt(a, bb, c, m, k, n);
  }
}

// ---------------------------------------------------------------------------------------------
// Transpose of [batch, rows, cols, inner] to [batch, cols, rows, inner]: every 2D transpose and
// attention's [B, T, H, hd] <-> [B, H, T, hd]. inner == 1 goes through 4x4 SIMD blocks.
// ---------------------------------------------------------------------------------------------
static void transpose_scalar(const f32* src, f32* dst, int rows, int cols, int r0, int c0) {
  for (int r = r0; r < rows; r++)
    for (int c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
  for (int r = 0; r < r0; r++)
    for (int c = c0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

static void transpose_2d(const f32* restrict src, f32* restrict dst, int rows, int cols) {
  int r4 = rows & ~3, c4 = cols & ~3;
  for (int r = 0; r < r4; r += 4) {
    for (int c = 0; c < c4; c += 4) {
      v128_t a = wasm_v128_load(src + r * cols + c);
      v128_t b = wasm_v128_load(src + (r + 1) * cols + c);
      v128_t e = wasm_v128_load(src + (r + 2) * cols + c);
      v128_t d = wasm_v128_load(src + (r + 3) * cols + c);
      v128_t ab_lo = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), ab_hi = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7);
      v128_t ed_lo = wasm_i32x4_shuffle(e, d, 0, 4, 1, 5), ed_hi = wasm_i32x4_shuffle(e, d, 2, 6, 3, 7);
      wasm_v128_store(dst + c * rows + r, wasm_i32x4_shuffle(ab_lo, ed_lo, 0, 1, 4, 5));
      wasm_v128_store(dst + (c + 1) * rows + r, wasm_i32x4_shuffle(ab_lo, ed_lo, 2, 3, 6, 7));
      wasm_v128_store(dst + (c + 2) * rows + r, wasm_i32x4_shuffle(ab_hi, ed_hi, 0, 1, 4, 5));
      wasm_v128_store(dst + (c + 3) * rows + r, wasm_i32x4_shuffle(ab_hi, ed_hi, 2, 3, 6, 7));
    }
  }
  transpose_scalar(src, dst, rows, cols, r4, c4);
}

EXPORT void transpose(const f32* restrict src, f32* restrict dst, int batch, int rows, int cols,
                      int inner) {
  int plane = rows * cols * inner;
  for (int b = 0; b < batch; b++) {
    const f32* s = src + b * plane;
    f32* d = dst + b * plane;
    if (inner == 1) {
      transpose_2d(s, d, rows, cols);
      continue;
    }
    int i4 = inner & ~3;
    for (int r = 0; r < rows; r++)
      for (int c = 0; c < cols; c++) {
        const f32* from = s + (r * cols + c) * inner;
        f32* to = d + (c * rows + r) * inner;
        int i = 0;
        for (; i < i4; i += 4) wasm_v128_store(to + i, wasm_v128_load(from + i));
        for (; i < inner; i++) to[i] = from[i];
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Column sums: out[c] = sum_r x[r, c] for x [rows, cols] (bias gradients: tfjs-backend-wasm
// transposes before every reduction over a leading axis).
// ---------------------------------------------------------------------------------------------
EXPORT void colsum(const f32* restrict x, f32* restrict out, int rows, int cols) {
  int c4 = cols & ~3;
  for (int c = 0; c < cols; c++) out[c] = 0.f;
  for (int r = 0; r < rows; r++) {
    const f32* row = x + r * cols;
    int c = 0;
    for (; c < c4; c += 4)
      wasm_v128_store(out + c, wasm_f32x4_add(wasm_v128_load(out + c), wasm_v128_load(row + c)));
    for (; c < cols; c++) out[c] += row[c];
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last axis of x [rows, d]: y = (x - mean) / sqrt(var + eps) * g + b, with
// the biased variance (as PyTorch and tf.moments).
// ---------------------------------------------------------------------------------------------
static inline f32 rsqrt_f(f32 v) { return 1.f / __builtin_sqrtf(v); }

static inline void row_stats(const f32* x, int d, f32 eps, f32* mean, f32* rstd) {
  int d4 = d & ~3;
  v128_t s = wasm_f32x4_splat(0.f);
  int j = 0;
  for (; j < d4; j += 4) s = wasm_f32x4_add(s, wasm_v128_load(x + j));
  f32 sum = hsum(s);
  for (; j < d; j++) sum += x[j];
  f32 mu = sum / (f32)d;
  v128_t mv = wasm_f32x4_splat(mu);
  v128_t q = wasm_f32x4_splat(0.f);
  for (j = 0; j < d4; j += 4) {
    v128_t c = wasm_f32x4_sub(wasm_v128_load(x + j), mv);
    q = wasm_f32x4_add(q, wasm_f32x4_mul(c, c));
  }
  f32 sq = hsum(q);
  for (; j < d; j++) sq += (x[j] - mu) * (x[j] - mu);
  *mean = mu;
  *rstd = rsqrt_f(sq / (f32)d + eps);
}

EXPORT void layernorm(const f32* restrict x, const f32* restrict g, const f32* restrict b,
                      f32* restrict y, int rows, int d, f32 eps) {
  for (int r = 0; r < rows; r++) {
    const f32* xr = x + r * d;
    f32* yr = y + r * d;
    f32 mu, rs;
    row_stats(xr, d, eps, &mu, &rs);
    for (int j = 0; j < d; j++) yr[j] = (xr[j] - mu) * rs * g[j] + b[j];
  }
}

// Gradients of layernorm: dx [rows, d], dg [d], db [d] from dy [rows, d]. With xh the normalised
// input and gy = dy * g: dx = rstd * (gy - mean(gy) - xh * mean(gy * xh)).
EXPORT void layernorm_grad(const f32* restrict dy, const f32* restrict x, const f32* restrict g,
                           f32* restrict dx, f32* restrict dg, f32* restrict db, int rows, int d,
                           f32 eps) {
  for (int j = 0; j < d; j++) dg[j] = db[j] = 0.f;
  for (int r = 0; r < rows; r++) {
    const f32* xr = x + r * d;
    const f32* dyr = dy + r * d;
    f32* dxr = dx + r * d;
    f32 mu, rs;
    row_stats(xr, d, eps, &mu, &rs);
    f32 s1 = 0.f, s2 = 0.f;
    for (int j = 0; j < d; j++) {
      f32 xh = (xr[j] - mu) * rs;
      f32 gy = dyr[j] * g[j];
      s1 += gy;
      s2 += gy * xh;
      dg[j] += dyr[j] * xh;
      db[j] += dyr[j];
    }
    s1 /= (f32)d;
    s2 /= (f32)d;
    for (int j = 0; j < d; j++) {
      f32 xh = (xr[j] - mu) * rs;
      dxr[j] = rs * (dyr[j] * g[j] - s1 - xh * s2);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Exact GELU: y = x/2 (1 + erf(x / sqrt 2)), and its gradient. The forward pass takes erf from a
// rational approximation (erf4_rational); the gradient, which needs exp(-x^2/2) anyway, from
// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, as tfjs's own Erf) sharing that exponential.
// Both are within 1e-6 of the exact values (tests/backends/wasm_kernels_test.ts). The scalar tails (n % 4
// elements) use the Abramowitz & Stegun form for both.
// ---------------------------------------------------------------------------------------------
static inline f32 exp_f(f32 x) {
  // exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2 / 2; inputs here are <= 0.
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  f32 n = __builtin_rintf(x * 1.44269504088896341f);
  f32 r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
  f32 p = 1.f + r * (1.f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f +
                      r * (0.00833333377f + r * 0.00138888892f)))));
  union { f32 f; int i; } s;
  s.i = ((int)n + 127) << 23;
  return p * s.f;
}

static inline f32 erf_f(f32 x) {
  const f32 p = 0.3275911f, a1 = 0.254829592f, a2 = -0.284496736f, a3 = 1.421413741f,
            a4 = -1.453152027f, a5 = 1.061405429f;
  f32 ax = __builtin_fabsf(x);
  f32 t = 1.f / (1.f + p * ax);
  f32 y = 1.f - (((((a5 * t + a4) * t) + a3) * t + a2) * t + a1) * t * exp_f(-ax * ax);
  return __builtin_copysignf(y, x);
}

// Four lanes of exp_f and erf_f, the same arithmetic.
static inline v128_t exp4(v128_t x) {
  x = wasm_f32x4_min(wasm_f32x4_max(x, wasm_f32x4_splat(-87.f)), wasm_f32x4_splat(88.f));
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (f32x4.nearest would be scalarised by clang 16);
  // the low bits of the shifted value hold n as an integer.
  const v128_t magic = wasm_f32x4_splat(12582912.f);
  v128_t shifted = wasm_f32x4_add(wasm_f32x4_mul(x, wasm_f32x4_splat(1.44269504088896341f)), magic);
  v128_t n = wasm_f32x4_sub(shifted, magic);
  v128_t r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, wasm_f32x4_splat(0.693145751953125f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, wasm_f32x4_splat(1.428606765330187e-06f)));
  v128_t p = wasm_f32x4_splat(0.00138888892f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(0.00833333377f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(0.0416666679f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(0.166666672f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(0.5f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.f));
  v128_t ni = wasm_i32x4_sub(shifted, magic);  // bit patterns: the integer n
  v128_t e = wasm_i32x4_shl(wasm_i32x4_add(ni, wasm_i32x4_splat(127)), 23);
  return wasm_f32x4_mul(p, e);
}

// erf(x) given e = exp(-x^2), which gelu_grad shares with the normal density.
static inline v128_t erf4_e(v128_t x, v128_t e) {
  v128_t ax = wasm_f32x4_abs(x);
  v128_t one = wasm_f32x4_splat(1.f);
  v128_t t = wasm_f32x4_div(one, wasm_f32x4_add(one, wasm_f32x4_mul(wasm_f32x4_splat(0.3275911f), ax)));
  v128_t p = wasm_f32x4_splat(1.061405429f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(-1.453152027f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(1.421413741f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(-0.284496736f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, t), wasm_f32x4_splat(0.254829592f));
  p = wasm_f32x4_mul(p, t);
  v128_t y = wasm_f32x4_sub(one, wasm_f32x4_mul(p, e));
  v128_t sign = wasm_i32x4_splat((int)0x80000000);
  return wasm_v128_or(wasm_v128_andnot(y, sign), wasm_v128_and(x, sign));
}


// erf(x) as x P(x^2) / Q(x^2) on [-4, 4] (the rational form of Eigen and XLA; |error| < 5e-7,
// checked against Python's math.erf on 200,001 points of [-6, 6]): no exp, about 25 operations
// against 40 for erf4.
static inline v128_t erf4_rational(v128_t x) {
  x = wasm_f32x4_min(wasm_f32x4_max(x, wasm_f32x4_splat(-4.f)), wasm_f32x4_splat(4.f));
  v128_t x2 = wasm_f32x4_mul(x, x);
  v128_t p = wasm_f32x4_splat(-2.72614225801306e-10f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), wasm_f32x4_splat(2.77068142495902e-08f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), wasm_f32x4_splat(-2.10102402082508e-06f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), wasm_f32x4_splat(-5.69250639462346e-05f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), wasm_f32x4_splat(-7.34990630326855e-04f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), wasm_f32x4_splat(-2.95459980854025e-03f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), wasm_f32x4_splat(-1.60960333262415e-02f));
  v128_t q = wasm_f32x4_splat(-1.45660718464996e-05f);
  q = wasm_f32x4_add(wasm_f32x4_mul(q, x2), wasm_f32x4_splat(-2.13374055278905e-04f));
  q = wasm_f32x4_add(wasm_f32x4_mul(q, x2), wasm_f32x4_splat(-1.68282697438203e-03f));
  q = wasm_f32x4_add(wasm_f32x4_mul(q, x2), wasm_f32x4_splat(-7.37332916720468e-03f));
  q = wasm_f32x4_add(wasm_f32x4_mul(q, x2), wasm_f32x4_splat(-1.42647390514189e-02f));
  return wasm_f32x4_div(wasm_f32x4_mul(x, p), q);
}

EXPORT void gelu(const f32* restrict x, f32* restrict y, int n) {
  int i = 0;
  const v128_t half = wasm_f32x4_splat(0.5f), one = wasm_f32x4_splat(1.f);
  const v128_t s = wasm_f32x4_splat(0.70710678118654752f);
  for (; i + 4 <= n; i += 4) {
    v128_t v = wasm_v128_load(x + i);
    v128_t e = erf4_rational(wasm_f32x4_mul(v, s));
    wasm_v128_store(y + i, wasm_f32x4_mul(wasm_f32x4_mul(half, v), wasm_f32x4_add(one, e)));
  }
  for (; i < n; i++) {
    f32 v = x[i];
    y[i] = 0.5f * v * (1.f + erf_f(v * 0.70710678118654752f));
  }
}

// dx = dy * (Phi(x) + x phi(x)), Phi(x) = (1 + erf(x / sqrt 2)) / 2, phi(x) = exp(-x^2/2)/sqrt(2 pi).
EXPORT void gelu_grad(const f32* restrict dy, const f32* restrict x, f32* restrict dx, int n) {
  int i = 0;
  const v128_t half = wasm_f32x4_splat(0.5f), one = wasm_f32x4_splat(1.f);
  const v128_t s = wasm_f32x4_splat(0.70710678118654752f);
  const v128_t c = wasm_f32x4_splat(0.3989422804014327f);
  for (; i + 4 <= n; i += 4) {
    v128_t v = wasm_v128_load(x + i);
    v128_t z = wasm_f32x4_mul(v, s);
    v128_t e = exp4(wasm_f32x4_neg(wasm_f32x4_mul(z, z)));  // exp(-x^2 / 2)
    v128_t cdf = wasm_f32x4_mul(half, wasm_f32x4_add(one, erf4_e(z, e)));
    v128_t pdf = wasm_f32x4_mul(c, e);
    v128_t d = wasm_f32x4_add(cdf, wasm_f32x4_mul(v, pdf));
    wasm_v128_store(dx + i, wasm_f32x4_mul(wasm_v128_load(dy + i), d));
  }
  for (; i < n; i++) {
    f32 v = x[i];
    f32 cdf = 0.5f * (1.f + erf_f(v * 0.70710678118654752f));
    f32 pdf = 0.3989422804014327f * exp_f(-0.5f * v * v);
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

// ---------------------------------------------------------------------------------------------
// AdamW (torch.optim.AdamW) for one parameter, in the exact float32 operation order of
// lib/optim/optim.ts's unfused path, so both give bit-identical results:
//   m1 = m + (g - m) * c1m;  v1 = v * b2 + g^2 * c2;  denom = sqrt(v1) / sbc2 + eps;
//   p1 = p * decay - (m1 / denom) * step     (decay = 1 - lr wd, step = lr / bc1)
// ---------------------------------------------------------------------------------------------
EXPORT void adamw(const f32* restrict p, const f32* restrict g, const f32* restrict m,
                  const f32* restrict v, f32* restrict p1, f32* restrict m1, f32* restrict v1, int n,
                  f32 c1m, f32 b2, f32 c2, f32 sbc2, f32 eps, f32 decay, f32 step, int has_decay) {
  for (int i = 0; i < n; i++) {
    f32 gi = g[i];
    f32 mi = m[i] + (gi - m[i]) * c1m;
    f32 vi = v[i] * b2 + (gi * gi) * c2;
    f32 denom = __builtin_sqrtf(vi) / sbc2 + eps;
    f32 pi = has_decay ? p[i] * decay : p[i];
    p1[i] = pi - (mi / denom) * step;
    m1[i] = mi;
    v1[i] = vi;
  }
}

// EMA: t1 = t * mom + s * (1 - mom), the order of lib/methods/mocov3.ts's emaUpdate.
EXPORT void ema(const f32* restrict t, const f32* restrict s, f32* restrict t1, int n, f32 mom,
                f32 one_minus) {
  for (int i = 0; i < n; i++) t1[i] = t[i] * mom + s[i] * one_minus;
}

// ---------------------------------------------------------------------------------------------
// Strided block copy of 4-byte elements: for r < rows, dst[r * dst_stride + i] = src[r *
// src_stride + i], i < len. One call per part of a split (src offset by the part's start) or of a
// concat (dst offset likewise) along any axis.
// ---------------------------------------------------------------------------------------------
EXPORT void copy_rows(const f32* restrict src, f32* restrict dst, int rows, int len,
                      int src_stride, int dst_stride) {
  for (int r = 0; r < rows; r++) {
    const f32* s = src + r * src_stride;
    f32* d = dst + r * dst_stride;
    for (int i = 0; i < len; i++) d[i] = s[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Multi-head self-attention in one pass, and its gradient. qkv is the qkv projection [B*T, 3D]
// (columns q | k | v, head h in columns h*hd .. (h+1)*hd of each), out is [B*T, D] with the
// heads side by side (what the output projection reads), probs [B, H, T, T] the attention
// probabilities softmax(q k^T * scale), kept for the backward pass. hd must be a multiple of 4.
// This replaces the split, four transposes, two batched products, the scale and the softmax of
// the unfused graph (and twice as many kernels backward), which cost more than the products.
// Per head, k (forward) or v (backward) is first transposed into scratch as [hd, Tp] (Tp = T
// rounded up to 4, zero-padded), so that a row of scores is a SIMD combination of its rows; every
// product is one combine_rows, whose accumulators stay in registers.
// ---------------------------------------------------------------------------------------------

// out[0..len) = sum_{j<n} w[j * ws] * X[j * xs + 0..len), len a multiple of 4: a weighted sum of
// rows (probs @ v, dS @ k ...) or, with X a transposed head [hd, Tp], a row of scores.
static void combine_rows(const f32* restrict w, int ws, const f32* restrict X, int xs, int n,
                         f32* restrict out, int len) {
  int c = 0;
  for (; c + 16 <= len; c += 16) {
    v128_t a0 = wasm_f32x4_splat(0.f), a1 = a0, a2 = a0, a3 = a0;
    for (int j = 0; j < n; j++) {
      v128_t s = wasm_f32x4_splat(w[j * ws]);
      const f32* x = X + j * xs + c;
      a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(s, wasm_v128_load(x)));
      a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(s, wasm_v128_load(x + 4)));
      a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(s, wasm_v128_load(x + 8)));
      a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(s, wasm_v128_load(x + 12)));
    }
    wasm_v128_store(out + c, a0);
    wasm_v128_store(out + c + 4, a1);
    wasm_v128_store(out + c + 8, a2);
    wasm_v128_store(out + c + 12, a3);
  }
  for (; c < len; c += 4) {
    v128_t a = wasm_f32x4_splat(0.f);
    for (int j = 0; j < n; j++)
      a = wasm_f32x4_add(a, wasm_f32x4_mul(wasm_f32x4_splat(w[j * ws]), wasm_v128_load(X + j * xs + c)));
    wasm_v128_store(out + c, a);
  }
}

// M[c * Tp + j] = X[j * xs + c] for j < T, zero for T <= j < Tp.
static void transpose_head(const f32* restrict X, int xs, int T, int Tp, int hd, f32* restrict M) {
  for (int c = 0; c < hd; c++) {
    for (int j = 0; j < T; j++) M[c * Tp + j] = X[j * xs + c];
    for (int j = T; j < Tp; j++) M[c * Tp + j] = 0.f;
  }
}

// scratch: hd * Tp + Tp floats.
EXPORT void attention(const f32* restrict qkv, f32* restrict out, f32* restrict probs,
                      f32* restrict scratch, int B, int T, int H, int hd, f32 scale) {
  const int D = H * hd, D3 = 3 * D, Tp = (T + 3) & ~3;
  f32* kt = scratch;
  f32* row = scratch + hd * Tp;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      const f32* base = qkv + b * T * D3 + h * hd;  // q of token 0; k at + D, v at + 2D
      f32* P = probs + (b * H + h) * T * T;
      transpose_head(base + D, D3, T, Tp, hd, kt);
      for (int i = 0; i < T; i++) {
        combine_rows(base + i * D3, 1, kt, Tp, hd, row, Tp);  // q_i k^T
        f32 mx = -3.4e38f;
        for (int j = 0; j < T; j++) {
          row[j] *= scale;
          mx = row[j] > mx ? row[j] : mx;
        }
        const v128_t vm = wasm_f32x4_splat(mx);
        v128_t vsum = wasm_f32x4_splat(0.f);
        for (int j = 0; j < Tp; j += 4) {
          v128_t e = exp4(wasm_f32x4_sub(wasm_v128_load(row + j), vm));
          wasm_v128_store(row + j, e);
          if (j + 4 > T) {  // zero the padding lanes
            for (int l = T; l < j + 4; l++) row[l] = 0.f;
            e = wasm_v128_load(row + j);
          }
          vsum = wasm_f32x4_add(vsum, e);
        }
        f32 inv = 1.f / hsum(vsum);
        for (int j = 0; j < T; j++) P[i * T + j] = row[j] *= inv;
        combine_rows(row, 1, base + 2 * D, D3, T, out + (b * T + i) * D + h * hd, hd);
      }
    }
}

// dqkv [B*T, 3D] from dout [B*T, D] and dprobs [B, H, T, T] (the gradient reaching the probs
// output directly; zeros when only out is used). scratch: hd * Tp + T * Tp floats. With P the
// probs and dP = dout v^T + dprobs: dS = P * (dP - rowsum(P * dP)) * scale, dq = dS k,
// dk = dS^T q, dv = P^T dout.
EXPORT void attention_grad(const f32* restrict dout, const f32* restrict dprobs,
                           const f32* restrict qkv, const f32* restrict probs, f32* restrict dqkv,
                           f32* restrict scratch, int B, int T, int H, int hd, f32 scale) {
  const int D = H * hd, D3 = 3 * D, Tp = (T + 3) & ~3;
  f32* vt = scratch;
  f32* ds = scratch + hd * Tp;  // [T, Tp]
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      const f32* base = qkv + b * T * D3 + h * hd;
      f32* dbase = dqkv + b * T * D3 + h * hd;
      const f32* dO = dout + b * T * D + h * hd;  // row stride D
      const f32* P = probs + (b * H + h) * T * T;
      const f32* dPin = dprobs + (b * H + h) * T * T;
      transpose_head(base + 2 * D, D3, T, Tp, hd, vt);
      for (int i = 0; i < T; i++) {
        f32* d = ds + i * Tp;
        combine_rows(dO + i * D, 1, vt, Tp, hd, d, Tp);  // dout_i v^T
        const f32* p = P + i * T;
        f32 rs = 0.f;
        for (int j = 0; j < T; j++) {
          d[j] += dPin[i * T + j];
          rs += p[j] * d[j];
        }
        for (int j = 0; j < T; j++) d[j] = scale * p[j] * (d[j] - rs);
        combine_rows(d, 1, base + D, D3, T, dbase + i * D3, hd);  // dq_i = sum_j dS_ij k_j
      }
      for (int j = 0; j < T; j++) {
        combine_rows(ds + j, Tp, base, D3, T, dbase + j * D3 + D, hd);  // dk_j = sum_i dS_ij q_i
        combine_rows(P + j, T, dO, D, T, dbase + j * D3 + 2 * D, hd);  // dv_j = sum_i P_ij dO_i
      }
    }
}
