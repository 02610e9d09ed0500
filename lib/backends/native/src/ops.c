// Elementwise kernels, reductions, copies, LayerNorm, GELU, AdamW and EMA of libvitssl_native,
// compiled once per instruction set (see vn.h) with FMA contraction off, so that every
// elementwise result is the correctly rounded float32 of each operation, as tfjs's own kernels
// (GELU and its gradient, which have no unfused twin, excepted: see erf_rational).
//
// Work is split in fixed chunks (CHUNK elements, or rows) that do not depend on the thread
// count, and an element's arithmetic does not depend on where its chunk starts: tails go through
// the same vector code on a padded copy. Reductions over rows are summed per fixed chunk of rows
// and the chunk partials added in order, so every result is bit-identical for any thread count.
#include <math.h>
#include <string.h>

#include "vn.h"

// Work per task: at least CHUNK elements (or rows of about that many elements), so that small
// ops run in the calling thread alone (each parallel region costs a wake-up, and on a busy
// machine a descheduled worker holding a task stalls the region).
#define CHUNK 131072
#define ROWS 32
static inline int rows_per_task(int d) {
  int r = CHUNK / (d > 0 ? d : 1);
  return r < ROWS ? ROWS : r;
}

static inline int chunks(int64_t n, int64_t c) { return (int)((n + c - 1) / c); }

// Runs vec(x..) over [lo, hi) in vectors of VL; the tail through padded copies (of up to four
// input streams), so each element gets the same arithmetic wherever it lies.
#define ELEMENTWISE(lo, hi, NIN, INS, OUTS, NOUT, BODY)                        \
  do {                                                                           \
    int64_t i_ = (lo);                                                           \
    for (; i_ + VL <= (hi); i_ += VL) {                                          \
      const int64_t at = i_;                                                     \
      BODY                                                                       \
    }                                                                            \
    if (i_ < (hi)) {                                                             \
      int rem_ = (int)((hi) - i_);                                               \
      float bin_[NIN][VL] __attribute__((aligned(64)));                          \
      float bout_[NOUT][VL] __attribute__((aligned(64)));                        \
      memset(bin_, 0, sizeof bin_);                                              \
      for (int s_ = 0; s_ < NIN; s_++) memcpy(bin_[s_], INS[s_] + i_, rem_ * 4); \
      const float* in_save_[NIN];                                                \
      float* out_save_[NOUT];                                                    \
      for (int s_ = 0; s_ < NIN; s_++) in_save_[s_] = INS[s_], INS[s_] = bin_[s_] - i_; \
      for (int s_ = 0; s_ < NOUT; s_++) out_save_[s_] = OUTS[s_], OUTS[s_] = bout_[s_] - i_; \
      {                                                                          \
        const int64_t at = i_;                                                   \
        BODY                                                                     \
      }                                                                          \
      for (int s_ = 0; s_ < NIN; s_++) INS[s_] = in_save_[s_];                   \
      for (int s_ = 0; s_ < NOUT; s_++) OUTS[s_] = out_save_[s_], memcpy(OUTS[s_] + i_, bout_[s_], rem_ * 4); \
    }                                                                            \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Binary ops with broadcasting. meta: shape[4], a strides[4], b strides[4] (elements; 0 on a
// broadcast axis); out is contiguous. op: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min,
// 6 squared difference, 7 pow.
// ---------------------------------------------------------------------------------------------
static inline vf bin_v(int op, vf a, vf b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return vmax(a, b);
    case 5: return vmin(a, b);
    default: { vf d = a - b; return d * d; }
  }
}
static inline float bin_s(int op, float a, float b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return a > b ? a : (a != a ? a : b);
    case 5: return a < b ? a : (a != a ? a : b);
    case 7: return b == 2.f ? (float)((double)a * a) : (float)pow((double)a, (double)b);
    default: { double d = (double)a - b; return (float)(d * d); }  // as tfjs: one rounding
  }
}

struct binary {
  int op;
  const float *a, *b;
  float* out;
  int32_t s[4], sa[4], sb[4];
};

// One task per row of the three outer axes (a row is the innermost axis), grouped in chunks.
static void binary_row(const struct binary* x, int64_t row) {
  int n3 = x->s[3];
  int64_t i2 = row % x->s[2], i1 = row / x->s[2] % x->s[1], i0 = row / x->s[2] / x->s[1];
  const float* a = x->a + i0 * x->sa[0] + i1 * x->sa[1] + i2 * x->sa[2];
  const float* b = x->b + i0 * x->sb[0] + i1 * x->sb[1] + i2 * x->sb[2];
  float* o = x->out + row * n3;
  int as = x->sa[3], bs = x->sb[3], op = x->op;
  int j = 0;
  if (op == 7 && as == 1 && bs == 0 && b[0] == 2.f) {  // x^2: the product rounded once, as bin_s
    for (; j + VL <= n3; j += VL) {
      vf v = vld(a + j);
      vst(o + j, v * v);
    }
  } else if (op == 7 && as == 1 && bs == 0 && b[0] == 1.f) {  // x^1 = x: pow is exact there
    for (; j + VL <= n3; j += VL) vst(o + j, vld(a + j));
  } else if (op >= 6) {  // squared difference, pow: scalar, in double (as tfjs's JS kernels)
  } else if (as == 1 && bs == 1) {
    for (; j + VL <= n3; j += VL) vst(o + j, bin_v(op, vld(a + j), vld(b + j)));
  } else if (as == 1 && bs == 0) {
    vf bv = vsplat(b[0]);
    for (; j + VL <= n3; j += VL) vst(o + j, bin_v(op, vld(a + j), bv));
  } else if (as == 0 && bs == 1) {
    vf av = vsplat(a[0]);
    for (; j + VL <= n3; j += VL) vst(o + j, bin_v(op, av, vld(b + j)));
  }
  for (; j < n3; j++) o[j] = bin_s(op, a[(int64_t)j * as], b[(int64_t)j * bs]);
}

static void binary_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct binary* x = ctx;
  int64_t rows = (int64_t)x->s[0] * x->s[1] * x->s[2];
  int64_t per = x->s[3] >= CHUNK ? 1 : CHUNK / (x->s[3] ? x->s[3] : 1);
  int64_t r0 = t * per, r1 = r0 + per < rows ? r0 + per : rows;
  for (int64_t r = r0; r < r1; r++) binary_row(x, r);
}

static void binary(int op, const float* a, const float* b, float* out, const int32_t* meta) {
  struct binary x = {op, a, b, out};
  for (int i = 0; i < 4; i++) x.s[i] = meta[i], x.sa[i] = meta[4 + i], x.sb[i] = meta[8 + i];
  int64_t rows = (int64_t)x.s[0] * x.s[1] * x.s[2];
  if (rows == 0 || x.s[3] == 0) return;
  int64_t per = x.s[3] >= CHUNK ? 1 : CHUNK / x.s[3];
  vn_parallel(chunks(rows, per), binary_task, &x);
}

// ---------------------------------------------------------------------------------------------
// Unary ops: 0 neg, 1 square, 2 sqrt, 3 rsqrt, 4 relu, 5 exp (float), 6 abs, 7 scale by alpha,
// 8 step (x > 0), 9 reciprocal, 10 floor. Scalar loops that GCC vectorises; correctly rounded where tfjs's
// are (exp uses libm expf, as precise as tfjs's Math.exp rounded to float32 in all but ties).
// ---------------------------------------------------------------------------------------------
struct unary {
  int op;
  const float* x;
  float* y;
  int64_t n;
  float alpha;
};

static void unary_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct unary* u = ctx;
  int64_t lo = (int64_t)t * CHUNK, hi = lo + CHUNK < u->n ? lo + CHUNK : u->n;
  const float* restrict x = u->x;
  float* restrict y = u->y;
  const float alpha = u->alpha;  // a local: read through u inside the loop, GCC kept step scalar
  switch (u->op) {
    case 0: for (int64_t i = lo; i < hi; i++) y[i] = -x[i]; break;
    case 1: for (int64_t i = lo; i < hi; i++) y[i] = x[i] * x[i]; break;
    case 2: for (int64_t i = lo; i < hi; i++) y[i] = sqrtf(x[i]); break;
    case 3: for (int64_t i = lo; i < hi; i++) y[i] = 1.f / sqrtf(x[i]); break;
    case 4: for (int64_t i = lo; i < hi; i++) y[i] = x[i] > 0.f ? x[i] : (x[i] != x[i] ? x[i] : 0.f); break;
    case 5: for (int64_t i = lo; i < hi; i++) y[i] = (float)exp((double)x[i]); break;
    case 6: for (int64_t i = lo; i < hi; i++) y[i] = fabsf(x[i]); break;
    case 7: for (int64_t i = lo; i < hi; i++) y[i] = x[i] * alpha; break;
    case 8: for (int64_t i = lo; i < hi; i++) y[i] = x[i] > 0.f ? 1.f : (x[i] != x[i] ? x[i] : alpha); break;
    case 10: for (int64_t i = lo; i < hi; i++) y[i] = floorf(x[i]); break;
    default: for (int64_t i = lo; i < hi; i++) y[i] = 1.f / x[i]; break;
  }
}

static void unary(int op, const float* x, float* y, int n, float alpha) {
  struct unary u = {op, x, y, n, alpha};
  if (n > 0) vn_parallel(chunks(n, CHUNK), unary_task, &u);
}

// ---------------------------------------------------------------------------------------------
// Sums over the last axis (sum_rows: out[r] = sum_c x[r, c] / div) or the first (sum_cols:
// out[c] = sum_r x[r, c] / div), accumulated in double (as tfjs's cpu kernels, in JS numbers).
// ---------------------------------------------------------------------------------------------
struct sum {
  const float* x;
  float* out;
  int rows, cols;
  float div;
};

static void sum_rows_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct sum* s = ctx;
  int per = s->cols >= CHUNK ? 1 : CHUNK / s->cols;
  int r0 = t * per, r1 = r0 + per < s->rows ? r0 + per : s->rows;
  for (int r = r0; r < r1; r++) {
    const float* x = s->x + (int64_t)r * s->cols;
    double acc = 0.0;
    for (int c = 0; c < s->cols; c++) acc += x[c];
    s->out[r] = (float)(acc / (double)s->div);
  }
}

static void sum_rows(const float* x, float* out, int rows, int cols, float div) {
  struct sum s = {x, out, rows, cols, div};
  if (rows <= 0) return;
  if (cols <= 0) {
    for (int r = 0; r < rows; r++) out[r] = 0.f;
    return;
  }
  int per = cols >= CHUNK ? 1 : CHUNK / cols;
  vn_parallel(chunks(rows, per), sum_rows_task, &s);
}

// A task per block of 256 columns: every column summed over all rows in order.
#define COLS 256
static void sum_cols_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct sum* s = ctx;
  int c0 = t * COLS, w = s->cols - c0 < COLS ? s->cols - c0 : COLS;
  double acc[COLS];
  for (int c = 0; c < w; c++) acc[c] = 0.0;
  for (int r = 0; r < s->rows; r++) {
    const float* x = s->x + (int64_t)r * s->cols + c0;
    for (int c = 0; c < w; c++) acc[c] += x[c];
  }
  for (int c = 0; c < w; c++) s->out[c0 + c] = (float)(acc[c] / (double)s->div);
}

static void sum_cols(const float* x, float* out, int rows, int cols, float div) {
  struct sum s = {x, out, rows, cols, div};
  if (cols > 0) vn_parallel(chunks(cols, COLS), sum_cols_task, &s);
}

// The same columns summed in float32, row after row from +0: one Add kernel per row, as tfjs's
// gradient of Tile computes them (each column is its own lane: any thread count, same bits).
static void sum_cols_f32_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct sum* s = ctx;
  int c0 = t * COLS, w = s->cols - c0 < COLS ? s->cols - c0 : COLS;
  float acc[COLS];
  for (int c = 0; c < w; c++) acc[c] = 0.f;
  for (int r = 0; r < s->rows; r++) {
    const float* x = s->x + (int64_t)r * s->cols + c0;
    for (int c = 0; c < w; c++) acc[c] += x[c];
  }
  for (int c = 0; c < w; c++) s->out[c0 + c] = acc[c];
}

static void sum_cols_f32(const float* x, float* out, int rows, int cols) {
  struct sum s = {x, out, rows, cols, 1.f};
  if (cols > 0) vn_parallel(chunks(cols, COLS), sum_cols_f32_task, &s);
}

// ---------------------------------------------------------------------------------------------
// Transpose of [batch, rows, cols, inner] to [batch, cols, rows, inner]; tasks are blocks of
// 32 source rows of one batch item.
// ---------------------------------------------------------------------------------------------
struct transpose {
  const float* src;
  float* dst;
  int batch, rows, cols, inner;
};

static void transpose_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct transpose* x = ctx;
  int per = rows_per_task(x->cols * x->inner), rblocks = chunks(x->rows, per);
  int b = t / rblocks, r0 = t % rblocks * per;
  int r1 = r0 + per < x->rows ? r0 + per : x->rows;
  int64_t plane = (int64_t)x->rows * x->cols * x->inner;
  const float* s = x->src + b * plane;
  float* d = x->dst + b * plane;
  int inner = x->inner, rows = x->rows, cols = x->cols;
  if (inner == 1) {
    for (int c0 = 0; c0 < cols; c0 += 32) {
      int c1 = c0 + 32 < cols ? c0 + 32 : cols;
      for (int r = r0; r < r1; r++)
        for (int c = c0; c < c1; c++) d[(int64_t)c * rows + r] = s[(int64_t)r * cols + c];
    }
    return;
  }
  for (int r = r0; r < r1; r++)
    for (int c = 0; c < cols; c++)
      memcpy(d + ((int64_t)c * rows + r) * inner, s + ((int64_t)r * cols + c) * inner,
             (size_t)inner * 4);
}

// Any permutation: out[i0, .., i_{r-1}] = src[sum_a i_a * strides[a]], meta = out shape[rank],
// then the source strides of each output axis (rank <= 8). Tasks are chunks of output rows.
struct transpose_nd {
  const float* src;
  float* dst;
  int rank;
  int32_t shape[8], strides[8];
  int64_t rows;
};

static void transpose_nd_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct transpose_nd* x = ctx;
  int last = x->shape[x->rank - 1], ls = x->strides[x->rank - 1];
  int64_t per = last >= CHUNK ? 1 : CHUNK / last;
  int64_t r0 = t * per, r1 = r0 + per < x->rows ? r0 + per : x->rows;
  for (int64_t r = r0; r < r1; r++) {
    int64_t rest = r, off = 0;
    for (int a = x->rank - 2; a >= 0; a--) {
      off += rest % x->shape[a] * x->strides[a];
      rest /= x->shape[a];
    }
    const float* s = x->src + off;
    float* d = x->dst + r * last;
    if (ls == 1) memcpy(d, s, (size_t)last * 4);
    else
      for (int j = 0; j < last; j++) d[j] = s[(int64_t)j * ls];
  }
}

static void transpose_nd(const float* src, float* dst, int rank, const int32_t* meta) {
  struct transpose_nd x = {src, dst, rank};
  x.rows = 1;
  for (int a = 0; a < rank; a++) {
    x.shape[a] = meta[a];
    x.strides[a] = meta[rank + a];
    if (a < rank - 1) x.rows *= meta[a];
  }
  int last = x.shape[rank - 1];
  if (x.rows == 0 || last == 0) return;
  vn_parallel(chunks(x.rows, last >= CHUNK ? 1 : CHUNK / last), transpose_nd_task, &x);
}

static void transpose(const float* src, float* dst, int batch, int rows, int cols, int inner) {
  struct transpose x = {src, dst, batch, rows, cols, inner};
  if ((int64_t)batch * rows * cols * inner > 0)
    vn_parallel(batch * chunks(rows, rows_per_task(cols * inner)), transpose_task, &x);
}

// For r < rows: copies len floats from src + r * src_stride to dst + r * dst_stride.
struct copy {
  const float* src;
  float* dst;
  int rows, len, ss, ds;
};

static void copy_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct copy* c = ctx;
  int per = c->len >= CHUNK ? 1 : CHUNK / c->len;
  int r0 = t * per, r1 = r0 + per < c->rows ? r0 + per : c->rows;
  for (int r = r0; r < r1; r++)
    memcpy(c->dst + (int64_t)r * c->ds, c->src + (int64_t)r * c->ss, (size_t)c->len * 4);
}

static void copy_rows(const float* src, float* dst, int rows, int len, int ss, int ds) {
  struct copy c = {src, dst, rows, len, ss, ds};
  if (rows > 0 && len > 0) vn_parallel(chunks(rows, len >= CHUNK ? 1 : CHUNK / len), copy_task, &c);
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last axis of x [rows, d]: y = (x - mean) / sqrt(var + eps) * g + b, biased
// variance. Statistics in vectors of VL lanes summed in order, then the scalar tail.
// ---------------------------------------------------------------------------------------------
struct ln {
  const float *x, *g, *b, *dy;
  float *y, *dx, *dg, *db, *part;
  int rows, d;
  float eps;
  const float* dres;  // gradient: added to dx (a residual's gradient), or NULL
  uint16_t* y16;      // forward: y rounded to bf16 (vn_bf16_bits) here instead of y, or NULL
};

// mean[r], rstd[r] of rows x + r * d, r < R (R <= 4): each row's sums as described above (vhsum's
// lane order), R rows' chains interleaved so that their latencies overlap (a row alone waits on
// one chain of adds after another); a row's numbers are the same whatever R is.
static inline __attribute__((always_inline)) void rows_stats(const float* x, int d, float eps,
                                                            int R, float* mean, float* rstd) {
  vf s[4], q[4];
  float sum[4], sq[4], mu[4];
  for (int r = 0; r < R; r++) s[r] = q[r] = (vf){0};
  int j = 0;
  for (; j + VL <= d; j += VL)
    for (int r = 0; r < R; r++) s[r] += vld(x + r * d + j);
  for (int r = 0; r < R; r++) sum[r] = 0.f;
  for (int i = 0; i < VL; i++)
    for (int r = 0; r < R; r++) sum[r] += s[r][i];
  for (; j < d; j++)
    for (int r = 0; r < R; r++) sum[r] += x[r * d + j];
  for (int r = 0; r < R; r++) mu[r] = sum[r] / (float)d;
  for (j = 0; j + VL <= d; j += VL)
    for (int r = 0; r < R; r++) {
      vf c = vld(x + r * d + j) - mu[r];
      q[r] += c * c;
    }
  for (int r = 0; r < R; r++) sq[r] = 0.f;
  for (int i = 0; i < VL; i++)
    for (int r = 0; r < R; r++) sq[r] += q[r][i];
  for (; j < d; j++)
    for (int r = 0; r < R; r++) sq[r] += (x[r * d + j] - mu[r]) * (x[r * d + j] - mu[r]);
  for (int r = 0; r < R; r++) {
    mean[r] = mu[r];
    rstd[r] = 1.f / sqrtf(sq[r] / (float)d + eps);
  }
}

// The statistics of rows r0 .. r0 + R of l->x into mean, rstd, R = min(4, r1 - r0); returns R.
static inline __attribute__((always_inline)) int ln_group_stats(const struct ln* l, int r0, int r1,
                                                                float* mean, float* rstd) {
  int R = r1 - r0 < 4 ? r1 - r0 : 4;
  const float* x0 = l->x + (int64_t)r0 * l->d;
  if (R == 4)
    rows_stats(x0, l->d, l->eps, 4, mean, rstd);
  else
    for (int q = 0; q < R; q++) rows_stats(x0 + q * l->d, l->d, l->eps, 1, mean + q, rstd + q);
  return R;
}

// Rows of a forward task: rows are independent (any split gives the same bits), so small tasks
// that share the rows evenly between the threads (2176 rows: 34 tasks of 64).
static inline int ln_rows_per_task(int d) {
  int r = 8192 / (d > 0 ? d : 1) / 4 * 4;
  return r < 4 ? 4 : r;
}

static void ln_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct ln* l = ctx;
  int d = l->d, per = ln_rows_per_task(d);
  int r1 = (t + 1) * per < l->rows ? (t + 1) * per : l->rows;
  for (int r0 = t * per; r0 < r1; r0 += 4) {
    float mus[4], rss[4];
    int R = ln_group_stats(l, r0, r1, mus, rss);
    for (int q = 0; q < R; q++) {
      int64_t at = (int64_t)(r0 + q) * d;
      const float* x = l->x + at;
      float mu = mus[q], rs = rss[q];
      int j = 0;
      if (l->y16) {
        uint16_t* y = l->y16 + at;
        for (; j + VL <= d; j += VL)
          vn_store_bf16(y + j, (vld(x + j) - mu) * rs * vld(l->g + j) + vld(l->b + j));
        for (; j < d; j++) y[j] = (uint16_t)vn_bf16_bits((x[j] - mu) * rs * l->g[j] + l->b[j]);
        continue;
      }
      float* y = l->y + at;
      for (; j + VL <= d; j += VL)
        vst(y + j, (vld(x + j) - mu) * rs * vld(l->g + j) + vld(l->b + j));
      for (; j < d; j++) y[j] = (x[j] - mu) * rs * l->g[j] + l->b[j];
    }
  }
}

static void layernorm(const float* x, const float* g, const float* b, float* y, uint16_t* y16,
                      int rows, int d, float eps) {
  struct ln l = {x, g, b, 0, y, 0, 0, 0, 0, rows, d, eps, NULL, y16};
  if (rows > 0 && d > 0) vn_parallel(chunks(rows, ln_rows_per_task(d)), ln_task, &l);
}

// With xh the normalised input and gy = dy * g: dx = rstd * (gy - mean(gy) - xh * mean(gy xh)).
// dg and db: per chunk of rows_per_task(d) rows into part[chunk][2d], then summed over chunks in
// order (the chunks depend on d only, never on the thread count).
static void ln_grad_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct ln* l = ctx;
  int d = l->d, per = rows_per_task(d), r1 = (t + 1) * per < l->rows ? (t + 1) * per : l->rows;
  float* pg = l->part + (int64_t)t * 2 * d;
  float* pb = pg + d;
  for (int j = 0; j < d; j++) pg[j] = pb[j] = 0.f;
  // Four rows at a time (their statistics and sums interleaved, as in ln_task); pg and pb take
  // the rows' terms in row order, element by element, as one row at a time would.
  const int dv = d / VL * VL;
  for (int r0 = t * per; r0 < r1; r0 += 4) {
    float mu[4], rs[4], s1[4], s2[4];
    vf v1[4], v2[4];
    int R = ln_group_stats(l, r0, r1, mu, rs);
    const float* x0 = l->x + (int64_t)r0 * d;
    const float* dy0 = l->dy + (int64_t)r0 * d;
    for (int q = 0; q < R; q++) {
      const float *x = x0 + q * d, *dy = dy0 + q * d;
      v1[q] = v2[q] = (vf){0};
      for (int j = 0; j < dv; j += VL) {
        vf xh = (vld(x + j) - mu[q]) * rs[q], dyv = vld(dy + j), gy = dyv * vld(l->g + j);
        v1[q] += gy;
        v2[q] += gy * xh;
        vst(pg + j, vld(pg + j) + dyv * xh);
        vst(pb + j, vld(pb + j) + dyv);
      }
    }
    for (int q = 0; q < R; q++) s1[q] = s2[q] = 0.f;
    for (int i = 0; i < VL; i++)
      for (int q = 0; q < R; q++) {
        s1[q] += v1[q][i];
        s2[q] += v2[q][i];
      }
    for (int q = 0; q < R; q++) {
      const float *x = x0 + q * d, *dy = dy0 + q * d;
      for (int j = dv; j < d; j++) {
        float xh = (x[j] - mu[q]) * rs[q], gy = dy[j] * l->g[j];
        s1[q] += gy;
        s2[q] += gy * xh;
        pg[j] += dy[j] * xh;
        pb[j] += dy[j];
      }
      s1[q] /= (float)d;
      s2[q] /= (float)d;
    }
    for (int q = 0; q < R; q++) {
      const float *x = x0 + q * d, *dy = dy0 + q * d;
      const float* res = l->dres ? l->dres + (int64_t)(r0 + q) * d : NULL;
      float* dx = l->dx + (int64_t)(r0 + q) * d;
      int j = 0;
      for (; j < dv; j += VL) {
        vf xh = (vld(x + j) - mu[q]) * rs[q];
        vf v = (vld(dy + j) * vld(l->g + j) - s1[q] - xh * s2[q]) * rs[q];
        vst(dx + j, res ? vld(res + j) + v : v);
      }
      for (; j < d; j++) {
        float xh = (x[j] - mu[q]) * rs[q];
        float v = (dy[j] * l->g[j] - s1[q] - xh * s2[q]) * rs[q];
        dx[j] = res ? res[j] + v : v;
      }
    }
  }
}

static void layernorm_grad(const float* dy, const float* x, const float* g, const float* dres,
                           float* dx, float* dg, float* db, int rows, int d, float eps) {
  if (d <= 0) return;
  int n = chunks(rows, rows_per_task(d));
  struct ln l = {x, g, 0, dy, 0, dx, dg, db, vn_shared_scratch(1, (size_t)n * 2 * d + 1), rows,
                 d, eps, dres};
  if (rows > 0) vn_parallel(n, ln_grad_task, &l);
  for (int j = 0; j < d; j++) dg[j] = db[j] = 0.f;
  for (int c = 0; c < n; c++) {
    const float* pg = l.part + (int64_t)c * 2 * d;
    for (int j = 0; j < d; j++) dg[j] += pg[j], db[j] += pg[d + j];
  }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm over the batch (training mode: each column's statistics over the rows of x [rows, d]),
// as PyTorch's BatchNorm1d: mean = sum x / rows, var = sum (x - mean)^2 / rows (biased), summed
// in float32 in row order; y = (x - mean) * rstd * g + b with rstd = 1 / sqrt(var + eps) (g, b
// NULL: none). The gradient, with xhat = (x - mean) rstd, from dy and the gradients dmean, dvar
// of the two statistics (NULL: zero): db = sum dy, dg = sum dy xhat, and
//   dx = rstd g (dy - db / rows - xhat dg / rows) + dmean / rows + 2 dvar (x - mean) / rows.
// Vectors run along the columns (a tail of fewer than VL through a zero-padded copy, the same
// arithmetic); one task per BN_COLS columns, so results are the same for any thread count.
// ---------------------------------------------------------------------------------------------
#define BN_COLS (4 * VL)

struct bn {
  const float *x, *g, *b, *dy, *dmean, *dvar, *mean_in, *var_in;
  float *y, *mean, *var, *dx, *dg, *db;
  int rows, d;
  float eps;
};

// n <= VL floats from p (zeros past n), and back.
static inline vf ld_n(const float* p, int n) {
  if (n == VL) return vld(p);
  vf v = {0};
  memcpy(&v, p, (size_t)n * sizeof(float));
  return v;
}
static inline void st_n(float* p, vf v, int n) {
  if (n == VL) vst(p, v);
  else memcpy(p, &v, (size_t)n * sizeof(float));
}
// 1 / sqrt(v + eps), lane by lane.
static inline vf rsqrt_eps(vf v, float eps) {
  vf r;
  for (int l = 0; l < VL; l++) r[l] = 1.f / sqrtf(v[l] + eps);
  return r;
}

static void bn_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct bn* a = ctx;
  const int64_t d = a->d;
  int c1 = (t + 1) * BN_COLS < a->d ? (t + 1) * BN_COLS : a->d;
  const vf inv = vsplat(1.f / (float)a->rows);
  for (int c = t * BN_COLS; c < c1; c += VL) {
    int n = c1 - c < VL ? c1 - c : VL;
    const float* x = a->x + c;
    vf s = {0}, q = {0};
    for (int r = 0; r < a->rows; r++) s += ld_n(x + r * d, n);
    vf mu = s * inv;
    for (int r = 0; r < a->rows; r++) {
      vf e = ld_n(x + r * d, n) - mu;
      q += e * e;
    }
    vf var = q * inv, rstd = rsqrt_eps(var, a->eps);
    vf g = a->g ? ld_n(a->g + c, n) : vsplat(1.f), b = a->b ? ld_n(a->b + c, n) : vsplat(0.f);
    st_n(a->mean + c, mu, n);
    st_n(a->var + c, var, n);
    for (int r = 0; r < a->rows; r++)
      st_n(a->y + c + r * d, (ld_n(x + r * d, n) - mu) * rstd * g + b, n);
  }
}

static void batchnorm(const float* x, const float* g, const float* b, float* y, float* mean,
                      float* var, int rows, int d, float eps) {
  struct bn a = {x, g, b, 0, 0, 0, 0, 0, y, mean, var, 0, 0, 0, rows, d, eps};
  if (rows > 0 && d > 0) vn_parallel(chunks(d, BN_COLS), bn_task, &a);
}

static void bn_grad_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct bn* a = ctx;
  const int64_t d = a->d;
  int c1 = (t + 1) * BN_COLS < a->d ? (t + 1) * BN_COLS : a->d;
  const vf inv = vsplat(1.f / (float)a->rows);
  for (int c = t * BN_COLS; c < c1; c += VL) {
    int n = c1 - c < VL ? c1 - c : VL;
    const float *x = a->x + c, *dy = a->dy + c;
    vf mu = ld_n(a->mean_in + c, n), rstd = rsqrt_eps(ld_n(a->var_in + c, n), a->eps);
    vf sdy = {0}, sdyx = {0};
    for (int r = 0; r < a->rows; r++) {
      vf g = ld_n(dy + r * d, n);
      sdy += g;
      sdyx += g * ((ld_n(x + r * d, n) - mu) * rstd);
    }
    if (a->dg) st_n(a->dg + c, sdyx, n);
    if (a->db) st_n(a->db + c, sdy, n);
    vf g = a->g ? ld_n(a->g + c, n) : vsplat(1.f), k = rstd * g;
    vf mdy = sdy * inv, mdyx = sdyx * inv;
    vf dm = a->dmean ? ld_n(a->dmean + c, n) * inv : vsplat(0.f);
    vf dv = a->dvar ? 2.f * ld_n(a->dvar + c, n) * inv : vsplat(0.f);
    for (int r = 0; r < a->rows; r++) {
      vf xc = ld_n(x + r * d, n) - mu;
      st_n(a->dx + c + r * d, k * (ld_n(dy + r * d, n) - mdy - xc * rstd * mdyx) + dm + dv * xc, n);
    }
  }
}

static void batchnorm_grad(const float* dy, const float* x, const float* g, const float* mean,
                           const float* var, const float* dmean, const float* dvar, float* dx,
                           float* dg, float* db, int rows, int d, float eps) {
  struct bn a = {x, g, 0, dy, dmean, dvar, mean, var, 0, 0, 0, dx, dg, db, rows, d, eps};
  if (rows > 0 && d > 0) vn_parallel(chunks(d, BN_COLS), bn_grad_task, &a);
}

// ---------------------------------------------------------------------------------------------
// Exact GELU, y = x/2 (1 + erf(x / sqrt 2)), and its gradient dy (Phi(x) + x phi(x)). The forward
// takes erf from the rational form of Eigen and XLA (|error| < 5e-7 on [-4, 4]), the gradient,
// which needs exp(-x^2/2) anyway, from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
// ---------------------------------------------------------------------------------------------
// With fused multiply-adds (one rounding per a * b + c), unlike the rest of this file, whose
// elementwise kernels reproduce tfjs's separately rounded operations: GELU has no unfused twin to
// match, and its polynomials run in about two thirds of the instructions.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
static inline vf erf_rational(vf x) {
  x = vmin(vmax(x, vsplat(-4.f)), vsplat(4.f));
  vf x2 = x * x;
  vf p = vsplat(-2.72614225801306e-10f);
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  vf q = vsplat(-1.45660718464996e-05f);
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return x * p / q;
}

// erf(x) given e = exp(-x^2).
static inline vf erf_as(vf x, vf e) {
  const vi sign = (vi){0} + (int32_t)0x80000000;
  vf ax = (vf)((vi)x & ~sign);
  vf t = 1.f / (1.f + 0.3275911f * ax);
  vf p = vsplat(1.061405429f);
  p = p * t + -1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t + -0.284496736f;
  p = p * t + 0.254829592f;
  p = p * t;
  vf y = 1.f - p * e;
  return (vf)(((vi)y & ~sign) | ((vi)x & sign));
}

// outs[0] = ins[1] * gelu'(ins[0]) at `at`: the body of gelu_grad and gelu_grad_rows.
#define GELU_GRAD_BODY                                          \
  vf v = vld(ins[0] + at);                                      \
  vf z = v * 0.70710678118654752f;                              \
  vf e = vexp(-(z * z)); /* exp(-x^2 / 2) */                    \
  vf cdf = 0.5f * (1.f + erf_as(z, e));                         \
  vf pdf = 0.3989422804014327f * e;                             \
  vst(outs[0] + at, vld(ins[1] + at) * (cdf + v * pdf));

struct gelu {
  const float *x, *dy;
  float *y, *dx;
  int64_t n;
};

static void gelu_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct gelu* g = ctx;
  int64_t lo = (int64_t)t * CHUNK, hi = lo + CHUNK < g->n ? lo + CHUNK : g->n;
  const float* ins[1] = {g->x};
  float* outs[1] = {g->y};
  ELEMENTWISE(lo, hi, 1, ins, outs, 1, {
    vf v = vld(ins[0] + at);
    vst(outs[0] + at, 0.5f * v * (1.f + erf_rational(v * 0.70710678118654752f)));
  });
}

static void gelu_grad_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct gelu* g = ctx;
  int64_t lo = (int64_t)t * CHUNK, hi = lo + CHUNK < g->n ? lo + CHUNK : g->n;
  const float* ins[2] = {g->x, g->dy};
  float* outs[1] = {g->dx};
  ELEMENTWISE(lo, hi, 2, ins, outs, 1, { GELU_GRAD_BODY });
}

// The same GELU on n values in the calling thread (a GEMM epilogue's rows): element for element
// the same bits as gelu (the body is lanewise; the tail runs it on a padded copy).
static void gelu_rows(const float* x, float* y, int n) {
  const float* ins[1] = {x};
  float* outs[1] = {y};
  ELEMENTWISE(0, n, 1, ins, outs, 1, {
    vf v = vld(ins[0] + at);
    vst(outs[0] + at, 0.5f * v * (1.f + erf_rational(v * 0.70710678118654752f)));
  });
}

// dx = dx * gelu'(x) on n values in the calling thread, in place (fc2's input gradient in its
// product's output pass): element for element the bits of gelu_grad with dy = dx.
static void gelu_grad_rows(float* dx, const float* x, int n) {
  const float* ins[2] = {x, dx};
  float* outs[1] = {dx};
  ELEMENTWISE(0, n, 2, ins, outs, 1, { GELU_GRAD_BODY });
}

#pragma GCC pop_options

static void gelu(const float* x, float* y, int n) {
  struct gelu g = {x, 0, y, 0, n};
  if (n > 0) vn_parallel(chunks(n, CHUNK), gelu_task, &g);
}

static void gelu_grad(const float* dy, const float* x, float* dx, int n) {
  struct gelu g = {x, dy, 0, dx, n};
  if (n > 0) vn_parallel(chunks(n, CHUNK), gelu_grad_task, &g);
}

// ---------------------------------------------------------------------------------------------
// AdamW (torch.optim.AdamW) in the exact float32 operation order of lib/optim/optim.ts's unfused path:
//   m1 = m + (g - m) * c1m;  v1 = v * b2 + g^2 * c2;  denom = sqrt(v1) / sbc2 + eps;
//   p1 = p * decay - (m1 / denom) * step     (decay = 1 - lr wd, step = lr / bc1)
// and EMA t1 = t * mom + s * (1 - mom) (lib/methods/mocov3.ts). Scalar loops, vectorised by GCC.
// ---------------------------------------------------------------------------------------------
// The optimiser's and the EMA's tasks are smaller than CHUNK: they stream 7 (3) arrays, so a
// parameter of 16,384 values already moves about 0.5 MB, and most of a ViT's parameters are
// smaller than CHUNK, which would leave them to one thread.
#define STREAM_CHUNK 16384

struct adamw {
  const float *p, *g, *m, *v, *t, *s;
  float *p1, *m1, *v1, *t1;
  int64_t n;
  float c1m, b2, c2, sbc2, eps, decay, step, mom, one_minus;
  int has_decay;
};

// AdamW on elements lo .. hi of one tensor, in place (p, m, v overwritten).
static inline void adamw_span(float* restrict p, const float* restrict g, float* restrict m,
                              float* restrict v, int64_t lo, int64_t hi, const struct adamw* a,
                              int has_decay) {
  const float c1m = a->c1m, b2 = a->b2, c2 = a->c2, sbc2 = a->sbc2, eps = a->eps;
  const float decay = a->decay, step = a->step;
  if (has_decay) {
    for (int64_t k = lo; k < hi; k++) {
      float gi = g[k], mi = m[k] + (gi - m[k]) * c1m, vi = v[k] * b2 + (gi * gi) * c2;
      float denom = sqrtf(vi) / sbc2 + eps;
      p[k] = p[k] * decay - (mi / denom) * step;
      m[k] = mi;
      v[k] = vi;
    }
  } else {
    for (int64_t k = lo; k < hi; k++) {
      float gi = g[k], mi = m[k] + (gi - m[k]) * c1m, vi = v[k] * b2 + (gi * gi) * c2;
      float denom = sqrtf(vi) / sbc2 + eps;
      p[k] = p[k] - (mi / denom) * step;
      m[k] = mi;
      v[k] = vi;
    }
  }
}

// x[lo .. hi) into y, unless they are the same array.
static inline void copy_span(const float* x, float* y, int64_t lo, int64_t hi) {
  if (x != y) memcpy(y + lo, x + lo, (size_t)(hi - lo) * sizeof *y);
}

static void adamw_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct adamw* a = ctx;
  int64_t lo = (int64_t)t * STREAM_CHUNK, hi = lo + STREAM_CHUNK < a->n ? lo + STREAM_CHUNK : a->n;
  copy_span(a->p, a->p1, lo, hi);
  copy_span(a->m, a->m1, lo, hi);
  copy_span(a->v, a->v1, lo, hi);
  adamw_span(a->p1, a->g, a->m1, a->v1, lo, hi, a, a->has_decay);
}

static void adamw(const float* p, const float* g, const float* m, const float* v, float* p1,
                  float* m1, float* v1, int n, float c1m, float b2, float c2, float sbc2, float eps,
                  float decay, float step, int has_decay) {
  struct adamw a = {p, g, m, v, 0, 0, p1, m1, v1, 0, n, c1m, b2, c2, sbc2, eps, decay, step, 0,
                    0, has_decay};
  if (n > 0) vn_parallel(chunks(n, STREAM_CHUNK), adamw_task, &a);
}

// The EMA on elements lo .. hi of one tensor, in place: x = x * mom + s * (1 - mom).
static inline void ema_span(float* restrict x, const float* restrict s, int64_t lo, int64_t hi,
                            const struct adamw* a) {
  const float mom = a->mom, om = a->one_minus;
  for (int64_t k = lo; k < hi; k++) x[k] = x[k] * mom + s[k] * om;
}

static void ema_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct adamw* a = ctx;
  int64_t lo = (int64_t)t * STREAM_CHUNK, hi = lo + STREAM_CHUNK < a->n ? lo + STREAM_CHUNK : a->n;
  copy_span(a->t, a->t1, lo, hi);
  ema_span(a->t1, a->s, lo, hi, a);
}

static void ema(const float* t, const float* s, float* t1, int n, float mom, float one_minus) {
  struct adamw a = {0};
  a.t = t, a.s = s, a.t1 = t1, a.n = n, a.mom = mom, a.one_minus = one_minus;
  if (n > 0) vn_parallel(chunks(n, STREAM_CHUNK), ema_task, &a);
}

// The same two updates on many tensors at once, in place, one pool job for all of them: tensor i
// is ptrs[4 i .. 4 i + 4) = p, g, m, v (AdamW; p, m, v overwritten) or ptrs[2 i], ptrs[2 i + 1]
// = t, s (EMA; t overwritten), n[i] floats, in chunks of STREAM_CHUNK. Element for element the
// float32 operations of adamw_task and ema_task, so the same bits (each element is read before
// it is written; the tensors themselves must not overlap).
struct many {
  void* const* ptrs;
  const int32_t* n;
  const int32_t* has_decay;
  const int32_t* first;  // first[i]: the index of tensor i's first chunk; first[count]: total
  int count;
  struct adamw c;  // the coefficients (c1m .. step, or mom and one_minus)
};

// The tensor of chunk t (first[] ascending) and the chunk's range in it.
static int many_chunk(const struct many* a, int t, int64_t* lo, int64_t* hi) {
  int i = 0, j = a->count;
  while (j - i > 1) {
    int mid = (i + j) / 2;
    if (a->first[mid] <= t) i = mid;
    else j = mid;
  }
  *lo = (int64_t)(t - a->first[i]) * STREAM_CHUNK;
  *hi = *lo + STREAM_CHUNK < a->n[i] ? *lo + STREAM_CHUNK : a->n[i];
  return i;
}

static void adamw_many_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct many* a = ctx;
  int64_t lo, hi;
  int i = many_chunk(a, t, &lo, &hi);
  void* const* q = a->ptrs + 4 * i;
  adamw_span(q[0], q[1], q[2], q[3], lo, hi, &a->c, a->has_decay[i]);
}

static void ema_many_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct many* a = ctx;
  int64_t lo, hi;
  int i = many_chunk(a, t, &lo, &hi);
  ema_span(a->ptrs[2 * i], a->ptrs[2 * i + 1], lo, hi, &a->c);
}

// Runs fn over every chunk of the count tensors (first[] built here, in shared scratch).
static void many_run(struct many* a, vn_task fn) {
  int32_t* first = (int32_t*)vn_shared_scratch(0, (size_t)a->count + 1);
  int total = 0;
  for (int i = 0; i < a->count; i++) first[i] = total, total += chunks(a->n[i], STREAM_CHUNK);
  first[a->count] = total;
  a->first = first;
  vn_parallel(total, fn, a);
}

static void adamw_many(int count, void* const* ptrs, const int32_t* n, const int32_t* has_decay,
                       float c1m, float b2, float c2, float sbc2, float eps, float decay,
                       float step) {
  struct many a = {ptrs, n, has_decay, 0, count, {0}};
  a.c.c1m = c1m, a.c.b2 = b2, a.c.c2 = c2, a.c.sbc2 = sbc2, a.c.eps = eps, a.c.decay = decay;
  a.c.step = step;
  if (count > 0) many_run(&a, adamw_many_task);
}

static void ema_many(int count, void* const* ptrs, const int32_t* n, float mom, float one_minus) {
  struct many a = {ptrs, n, 0, 0, count, {0}};
  a.c.mom = mom, a.c.one_minus = one_minus;
  if (count > 0) many_run(&a, ema_many_task);
}

// ---------------------------------------------------------------------------------------------
// Image ops of the augmentation (tfjs-backend-cpu's arithmetic, in double as its JS numbers).
// ---------------------------------------------------------------------------------------------

// y = min(max(x, lo), hi), NaN kept (tfjs's ClipByValue).
struct clip {
  const float* x;
  float* y;
  int64_t n;
  float lo, hi;
};

static void clip_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct clip* c = ctx;
  int64_t lo = (int64_t)t * CHUNK, hi = lo + CHUNK < c->n ? lo + CHUNK : c->n;
  const float* restrict x = c->x;
  float* restrict y = c->y;
  for (int64_t i = lo; i < hi; i++) {
    float v = x[i];
    y[i] = v > c->hi ? c->hi : (v < c->lo ? c->lo : v);
  }
}

static void clip(const float* x, float* y, int n, float lo, float hi) {
  struct clip c = {x, y, n, lo, hi};
  if (n > 0) vn_parallel(chunks(n, CHUNK), clip_task, &c);
}

// out[i_0, .., i_{r-1}] = src[sum_a idx_a[i_a]]: per-axis tables of source offsets (element
// strides already applied), meta = out shape[rank] (rank <= 8), idx concatenated by axis. Any
// slice, transpose, tile, reverse or mirror pad.
struct gather {
  const float* src;
  float* dst;
  int rank;
  int32_t shape[8];
  const int32_t* idx[8];
  int64_t rows;
};

static void gather_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct gather* g = ctx;
  int last = g->shape[g->rank - 1];
  int64_t per = last >= CHUNK ? 1 : CHUNK / last;
  int64_t r0 = t * per, r1 = r0 + per < g->rows ? r0 + per : g->rows;
  const int32_t* li = g->idx[g->rank - 1];
  for (int64_t r = r0; r < r1; r++) {
    int64_t rest = r, off = 0;
    for (int a = g->rank - 2; a >= 0; a--) {
      off += g->idx[a][rest % g->shape[a]];
      rest /= g->shape[a];
    }
    const float* s = g->src + off;
    float* d = g->dst + r * last;
    for (int j = 0; j < last; j++) d[j] = s[li[j]];
  }
}

static void gather_idx(const float* src, float* dst, int rank, const int32_t* meta,
                       const int32_t* idx) {
  struct gather g = {src, dst, rank};
  g.rows = 1;
  const int32_t* p = idx;
  for (int a = 0; a < rank; a++) {
    g.shape[a] = meta[a];
    g.idx[a] = p;
    p += meta[a];
    if (a < rank - 1) g.rows *= meta[a];
  }
  int last = g.shape[rank - 1];
  if (g.rows == 0 || last == 0) return;
  vn_parallel(chunks(g.rows, last >= CHUNK ? 1 : CHUNK / last), gather_task, &g);
}

// Depthwise 2D convolution, NHWC, filter [fh, fw, C, mult]; meta: B, H, W, C, mult, fh, fw,
// oh, ow, stride h, w, dilation h, w, pad top, left. One task per output row (b, oy).
struct dwconv {
  const float *x, *f;
  float* y;
  int32_t m[15];
};

static void dwconv_task(void* ctx, int t, int tid) {
  const struct dwconv* d = ctx;
  const int32_t* m = d->m;
  int H = m[1], W = m[2], C = m[3], mult = m[4], fh = m[5], fw = m[6], oh = m[7], ow = m[8];
  int sh = m[9], sw = m[10], dh = m[11], dw = m[12], top = m[13], left = m[14];
  int b = t / oh, oy = t % oh, OC = C * mult;
  const float* xb = d->x + (int64_t)b * H * W * C;
  float* yr = d->y + ((int64_t)b * oh + oy) * ow * OC;
  if (mult == 1 && sw == 1 && dw == 1 && left == 0 && (ow - 1 + fw) <= W) {
    // The blur's case: a row of outputs is a sum over taps of shifted input rows times a
    // per-channel weight, in double (as tfjs), with every (ox, c) summed in tap order.
    int n = ow * C;
    double* acc = (double*)vn_thread_scratch(tid, (size_t)2 * n + 2 * C);
    for (int i = 0; i < n; i++) acc[i] = 0.0;
    for (int fy = 0; fy < fh; fy++) {
      int iy = oy * sh - top + fy * dh;
      if (iy < 0 || iy >= H) continue;
      for (int fx = 0; fx < fw; fx++) {
        const float* xr = xb + ((int64_t)iy * W + fx) * C;
        const float* f = d->f + (int64_t)(fy * fw + fx) * C;
        if (C == 1) {
          double w = f[0];
          for (int i = 0; i < n; i++) acc[i] += (double)xr[i] * w;
        } else {
          for (int ox = 0; ox < ow; ox++)
            for (int c = 0; c < C; c++) acc[ox * C + c] += (double)xr[ox * C + c] * f[c];
        }
      }
    }
    for (int i = 0; i < n; i++) yr[i] = (float)acc[i];
    return;
  }
  for (int ox = 0; ox < ow; ox++) {
    for (int c = 0; c < C; c++) {
      for (int q = 0; q < mult; q++) {
        double acc = 0.0;
        for (int fy = 0; fy < fh; fy++) {
          int iy = oy * sh - top + fy * dh;
          if (iy < 0 || iy >= H) continue;
          for (int fx = 0; fx < fw; fx++) {
            int ix = ox * sw - left + fx * dw;
            if (ix < 0 || ix >= W) continue;
            acc += (double)xb[((int64_t)iy * W + ix) * C + c] *
                   d->f[((int64_t)(fy * fw + fx) * C + c) * mult + q];
          }
        }
        yr[(int64_t)ox * OC + c * mult + q] = (float)acc;
      }
    }
  }
}

static void dwconv(const float* x, const float* f, float* y, const int32_t* meta) {
  struct dwconv d = {x, f, y};
  for (int i = 0; i < 15; i++) d.m[i] = meta[i];
  int64_t rows = (int64_t)meta[0] * meta[7];
  if (rows > 0 && meta[8] > 0) vn_parallel((int)rows, dwconv_task, &d);
}

// Bilinear crop-and-resize (tfjs's CropAndResize, method "bilinear"); meta: B, H, W, C, boxes,
// crop h, crop w. Boxes whose index is out of range give zeros (tfjs's zero-filled buffer).
struct crop {
  const float *img, *boxes;
  const int32_t* ind;
  float* out;
  int32_t m[7];
  float extrapolation;
};

static void crop_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct crop* k = ctx;
  int batch = k->m[0], H = k->m[1], W = k->m[2], C = k->m[3], ch = k->m[5], cw = k->m[6];
  int b = t / ch, y = t % ch;
  float* row = k->out + ((int64_t)b * ch + y) * cw * C;
  double y1 = k->boxes[b * 4], x1 = k->boxes[b * 4 + 1], y2 = k->boxes[b * 4 + 2],
         x2 = k->boxes[b * 4 + 3];
  int bi = k->ind[b];
  if (bi >= batch) {
    memset(row, 0, (size_t)cw * C * 4);
    return;
  }
  double hs = ch > 1 ? (y2 - y1) * (H - 1) / (ch - 1) : 0;
  double ws = cw > 1 ? (x2 - x1) * (W - 1) / (cw - 1) : 0;
  double yi = ch > 1 ? y1 * (H - 1) + y * hs : 0.5 * (y1 + y2) * (H - 1);
  if (yi < 0 || yi > H - 1) {
    for (int i = 0; i < cw * C; i++) row[i] = k->extrapolation;
    return;
  }
  int ty = (int)floor(yi), by = (int)ceil(yi);
  double yl = yi - ty;
  const float* im = k->img + (int64_t)bi * H * W * C;
  for (int x = 0; x < cw; x++) {
    double xi = cw > 1 ? x1 * (W - 1) + x * ws : 0.5 * (x1 + x2) * (W - 1);
    float* o = row + (int64_t)x * C;
    if (xi < 0 || xi > W - 1) {
      for (int c = 0; c < C; c++) o[c] = k->extrapolation;
      continue;
    }
    int lx = (int)floor(xi), rx = (int)ceil(xi);
    double xl = xi - lx;
    for (int c = 0; c < C; c++) {
      double tl = im[((int64_t)ty * W + lx) * C + c], tr = im[((int64_t)ty * W + rx) * C + c];
      double bl = im[((int64_t)by * W + lx) * C + c], br = im[((int64_t)by * W + rx) * C + c];
      double top = tl + (tr - tl) * xl, bottom = bl + (br - bl) * xl;
      o[c] = (float)(top + (bottom - top) * yl);
    }
  }
}

static void crop_and_resize(const float* img, const float* boxes, const int32_t* ind, float* out,
                            const int32_t* meta, float extrapolation) {
  struct crop k = {img, boxes, ind, out};
  for (int i = 0; i < 7; i++) k.m[i] = meta[i];
  k.extrapolation = extrapolation;
  int64_t rows = (int64_t)meta[4] * meta[5];
  if (rows > 0 && meta[6] > 0) vn_parallel((int)rows, crop_task, &k);
}

// ---------------------------------------------------------------------------------------------
// Top k along the last axis of x [rows, n], as tfjs's TopK with sorted = true: vals and idx
// [rows, k], by value descending, equal values by ascending index (tfjs's comparePair; -0 and
// +0 are equal). Per row, the output row holds a heap of the k best elements so far whose root
// is the lowest ranked (smallest value; among equal values the largest index), built from the
// first k elements; the rest are scanned in index order, and one enters only if it is greater
// than the root (an equal value has a larger index, so it ranks below the root). A block of
// 4 VL elements whose maximum does not beat the root is skipped as a whole. The heap is then
// sorted in place. Rows are split in fixed chunks; each row's result depends on that row alone.
// Returns 1 if x holds a NaN or an infinity (the outputs are then unspecified): tfjs orders
// those by its comparator's NaN results, which this does not reproduce, so the caller falls
// back to tfjs's kernel.
// ---------------------------------------------------------------------------------------------
struct topk {
  const float* x;
  float* vals;
  int32_t* idx;
  int rows, n, k;
  int bad;
};

// Whether a ranks below b.
static inline int tk_below(float av, int32_t ai, float bv, int32_t bi) {
  return av < bv || (av == bv && ai > bi);
}

// Moves v[i] down the heap of `size` elements to its place.
static void tk_sift(float* v, int32_t* ix, int i, int size) {
  float x = v[i];
  int32_t xi = ix[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= size) break;
    if (c + 1 < size && tk_below(v[c + 1], ix[c + 1], v[c], ix[c])) c++;
    if (!tk_below(v[c], ix[c], x, xi)) break;
    v[i] = v[c], ix[i] = ix[c], i = c;
  }
  v[i] = x, ix[i] = xi;
}

// Any lane of m set.
static inline int tk_any(vi m) {
  int32_t r = 0;
  for (int j = 0; j < VL; j++) r |= m[j];
  return r != 0;
}

// Offers x[lo, hi) to the heap; returns the new root value.
static inline float tk_offer(const float* x, int lo, int hi, float* v, int32_t* ix, int k,
                             float thr) {
  for (int i = lo; i < hi; i++) {
    if (x[i] > thr) {
      v[0] = x[i], ix[0] = i;
      tk_sift(v, ix, 0, k);
      thr = v[0];
    }
  }
  return thr;
}

// One row; returns nonzero if it holds a NaN or an infinity.
static int topk_row(const float* x, float* v, int32_t* ix, int n, int k) {
  int bad = 0;
  for (int i = 0; i < k; i++) {
    v[i] = x[i], ix[i] = i;
    bad |= !isfinite(x[i]);
  }
  for (int i = k / 2 - 1; i >= 0; i--) tk_sift(v, ix, i, k);
  float thr = v[0];
  vi nonfinite = {0};  // OR of the bits of x * 0: +-0 for a finite x, NaN otherwise
  int i = k;
  for (; i + 4 * VL <= n; i += 4 * VL) {
    vf a = vld(x + i), b = vld(x + i + VL), c = vld(x + i + 2 * VL), d = vld(x + i + 3 * VL);
    nonfinite |= (vi)(a * 0.f) | (vi)(b * 0.f) | (vi)(c * 0.f) | (vi)(d * 0.f);
    if (tk_any(vmax(vmax(a, b), vmax(c, d)) > vsplat(thr)))
      thr = tk_offer(x, i, i + 4 * VL, v, ix, k, thr);
  }
  for (; i < n; i++) {
    bad |= !isfinite(x[i]);
    thr = tk_offer(x, i, i + 1, v, ix, k, thr);
  }
  bad |= tk_any(nonfinite & 0x7f800000);
  for (int end = k - 1; end > 0; end--) {  // the lowest ranked to the end, one at a time
    float t = v[0];
    int32_t ti = ix[0];
    v[0] = v[end], ix[0] = ix[end];
    v[end] = t, ix[end] = ti;
    tk_sift(v, ix, 0, end);
  }
  return bad;
}

static void topk_task(void* ctx, int t, int tid) {
  (void)tid;
  struct topk* p = ctx;
  int per = rows_per_task(p->n);
  int r0 = t * per, r1 = r0 + per < p->rows ? r0 + per : p->rows;
  int bad = 0;
  for (int r = r0; r < r1; r++)
    bad |= topk_row(p->x + (int64_t)r * p->n, p->vals + (int64_t)r * p->k,
                    p->idx + (int64_t)r * p->k, p->n, p->k);
  if (bad) __atomic_store_n(&p->bad, 1, __ATOMIC_RELAXED);
}

static int topk(const float* x, float* vals, int32_t* idx, int rows, int n, int k) {
  struct topk p = {x, vals, idx, rows, n, k, 0};
  if (rows <= 0 || k <= 0 || k > n) return 0;
  vn_parallel(chunks(rows, rows_per_task(n)), topk_task, &p);
  return p.bad;
}

const struct vn_impl SFX(vn_ops) = {
    .binary = binary,
    .unary = unary,
    .sum_rows = sum_rows,
    .sum_cols = sum_cols,
    .sum_cols_f32 = sum_cols_f32,
    .transpose = transpose,
    .transpose_nd = transpose_nd,
    .copy_rows = copy_rows,
    .layernorm = layernorm,
    .layernorm_grad = layernorm_grad,
    .batchnorm = batchnorm,
    .batchnorm_grad = batchnorm_grad,
    .gelu = gelu,
    .gelu_rows = gelu_rows,
    .gelu_grad = gelu_grad,
    .gelu_grad_rows = gelu_grad_rows,
    .adamw = adamw,
    .ema = ema,
    .adamw_many = adamw_many,
    .ema_many = ema_many,
    .clip = clip,
    .gather_idx = gather_idx,
    .dwconv = dwconv,
    .crop_and_resize = crop_and_resize,
    .topk = topk,
};
