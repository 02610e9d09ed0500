// Matrix products and fused attention of libvitssl_native, compiled once per instruction set
// (see vn.h). Built with FMA contraction on: a * b + c becomes one fused multiply-add.
//
// GEMM: C[m, n] = op(A) @ op(B), op(A) [m, k] stored [m, k] (ta = 0) or [k, m] (ta = 1), op(B)
// [k, n] stored [k, n] (tb = 0) or [n, k] (tb = 1). GotoBLAS blocking: op(B) is packed once
// into panels of NR columns per block of KC rows of k; each task (a tile of up to MC rows by NC
// columns of C) packs its rows of op(A) in strips of MR and runs an MR x NR register-tiled
// micro-kernel. Every element of C is summed over k in the same order (KC blocks in turn,
// within a block p = 0, 1, ...) whatever the tile it falls in, the tile sizes or the thread that
// runs it: edge tiles go through the same micro-kernel into a buffer. So results are
// bit-identical for any thread count (they differ between instruction sets).
//
// With rnd = 1 (bf16 emulated, see api.c) both operands are rounded to bf16 (vn_bf16_round) as
// they are packed, and the product runs in float32 as above: a product of two bf16 values is
// exact in float32, so this is bf16 multiplication with float32 accumulation.
#include <string.h>

#include "vn.h"

#if defined(VN_AVX512)
#define MR 12  // 24 accumulators of 32 zmm registers
#else
#define MR 6  // 12 accumulators of 16 ymm/xmm registers
#endif
#define NR (2 * VL)
#define KC 256
#define MC (8 * MR)

// C[MR, NR] (row stride ldc) = (first ? 0 : C) + Ap[kc, MR]^T-strip @ Bp[kc, NR]-panel. With ep
// (the last KC block of a full tile at row ei, column ej of C), the bias and residual of
// vn_tile_out on the registers before they are stored: + bias, then res +, the same float32
// operations in the same order, without a second pass over C. (The activation stays a pass over
// the task's rows: called on 32 columns at a time it cost more than the pass.)
static inline void ukernel(int kc, const float* restrict ap, const float* restrict bp,
                           float* restrict c, int64_t ldc, int first,
                           const struct vn_epilogue* ep, int ei, int ej) {
  vf c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++) c0[r] = c1[r] = (vf){0};
  for (int p = 0; p < kc; p++) {
    vf b0 = *(const vf*)(bp + p * NR), b1 = *(const vf*)(bp + p * NR + VL);
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      vf a = vsplat(ap[p * MR + r]);
      c0[r] += a * b0;
      c1[r] += a * b1;
    }
  }
  const float* bias = ep && ep->bias ? ep->bias + ej : NULL;
  const float* res = ep && ep->res ? ep->res + (size_t)ei * ldc + ej : NULL;
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++) {
    vf v0 = c0[r], v1 = c1[r];
    if (!first) {
      v0 = vld(c + r * ldc) + v0;
      v1 = vld(c + r * ldc + VL) + v1;
    }
    if (bias) {
      v0 = v0 + vld(bias);
      v1 = v1 + vld(bias + VL);
    }
    if (res) {
      v0 = vld(res + r * ldc) + v0;
      v1 = vld(res + r * ldc + VL) + v1;
    }
    vst(c + r * ldc, v0);
    vst(c + r * ldc + VL, v1);
  }
}

struct gemm {
  const float *A, *B;
  float* C;
  int m, k, n, ta, tb, rnd;
  struct vn_epilogue ep;
  int mc, npad, nc, mtiles, ntiles, kblocks;  // mc: rows of a row tile (vn_row_tile), <= MC
  float* bp;  // packed op(B): block kb at bp + kb * KC * npad, panel j at + j * NR * kc
  float* ap;  // NULL, or op(A) packed once for all column tiles: (MC tile, KC block) MC KC apart
};

static inline int kc_of(const struct gemm* g, int kb) {
  int rest = g->k - kb * KC;
  return rest < KC ? rest : KC;
}

// One task per (KC block, NR panel) of op(B).
static void pack_b_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct gemm* g = ctx;
  int panels = g->npad / NR;
  int kb = t / panels, jp = t % panels;
  int k0 = kb * KC, kc = kc_of(g, kb), j0 = jp * NR;
  int w = g->n - j0 < NR ? g->n - j0 : NR;
  float* dst = g->bp + (size_t)k0 * g->npad + (size_t)jp * NR * kc;
  if (!g->tb) {
    for (int p = 0; p < kc; p++) {
      const float* src = g->B + (size_t)(k0 + p) * g->n + j0;
      float* d = dst + p * NR;
      if (g->rnd) {
        for (int c = 0; c < w; c++) d[c] = vn_bf16_round(src[c]);
        for (int c = w; c < NR; c++) d[c] = 0.f;
      } else if (w == NR) {
        memcpy(d, src, NR * sizeof(float));
      } else {
        for (int c = 0; c < w; c++) d[c] = src[c];
        for (int c = w; c < NR; c++) d[c] = 0.f;
      }
    }
  } else {
    for (int c = 0; c < w; c++) {
      const float* src = g->B + (size_t)(j0 + c) * g->k + k0;
      if (g->rnd)
        for (int p = 0; p < kc; p++) dst[p * NR + c] = vn_bf16_round(src[p]);
      else
        for (int p = 0; p < kc; p++) dst[p * NR + c] = src[p];
    }
    for (int c = w; c < NR; c++)
      for (int p = 0; p < kc; p++) dst[p * NR + c] = 0.f;
  }
}

// Rows i0 .. i0 + rows of op(A), columns k0 .. k0 + kc, into strips of MR (zero-padded).
static void pack_a(const struct gemm* g, int i0, int rows, int k0, int kc, float* restrict ap) {
  for (int s = 0; s < rows; s += MR) {
    int h = rows - s < MR ? rows - s : MR;
    float* d = ap + (size_t)s * kc;
    if (g->ta) {
      for (int p = 0; p < kc; p++) {
        const float* src = g->A + (size_t)(k0 + p) * g->m + i0 + s;
        if (g->rnd)
          for (int r = 0; r < h; r++) d[p * MR + r] = vn_bf16_round(src[r]);
        else
          for (int r = 0; r < h; r++) d[p * MR + r] = src[r];
        for (int r = h; r < MR; r++) d[p * MR + r] = 0.f;
      }
    } else {
      for (int r = 0; r < h; r++) {
        const float* src = g->A + (size_t)(i0 + s + r) * g->k + k0;
        if (g->rnd)
          for (int p = 0; p < kc; p++) d[p * MR + r] = vn_bf16_round(src[p]);
        else
          for (int p = 0; p < kc; p++) d[p * MR + r] = src[p];
      }
      for (int r = h; r < MR; r++)
        for (int p = 0; p < kc; p++) d[p * MR + r] = 0.f;
    }
  }
}

// One task per (MC tile, KC block) of op(A): its strips into g->ap (see struct gemm).
static void pack_a_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct gemm* g = ctx;
  int it = t / g->kblocks, kb = t % g->kblocks, i0 = it * g->mc;
  int rows = g->m - i0 < g->mc ? g->m - i0 : g->mc;
  pack_a(g, i0, rows, kb * KC, kc_of(g, kb), g->ap + (size_t)t * MC * KC);
}

static void gemm_task(void* ctx, int t, int tid) {
  const struct gemm* g = ctx;
  int it = t / g->ntiles, jt = t % g->ntiles;
  int i0 = it * g->mc, rows = g->m - i0 < g->mc ? g->m - i0 : g->mc;
  int j0 = jt * g->nc, cols = g->n - j0 < g->nc ? g->n - j0 : g->nc;
  float* ap = vn_thread_scratch(tid, (size_t)MC * KC + MR * NR);
  float* tile = ap + (size_t)MC * KC;
  int sums = g->ep.rowsum && jt == 0;
  double acc[MC];
  if (sums)
    for (int r = 0; r < rows; r++) acc[r] = 0.0;
  struct vn_epilogue adds = vn_adds(&g->ep);
  const struct vn_epilogue* out = g->ep.bias || g->ep.res ? &adds : NULL;
  for (int kb = 0; kb < g->kblocks; kb++) {
    int k0 = kb * KC, kc = kc_of(g, kb), first = kb == 0;
    const struct vn_epilogue* last = kb == g->kblocks - 1 ? out : NULL;
    if (g->ap)
      ap = g->ap + ((size_t)it * g->kblocks + kb) * MC * KC;
    else
      pack_a(g, i0, rows, k0, kc, ap);
    if (sums) vn_rowsum_block(g->A, g->ta, g->m, g->k, i0, rows, k0, kc, acc);
    const float* bblock = g->bp + (size_t)k0 * g->npad;
    for (int j = 0; j < cols; j += NR) {
      const float* bpanel = bblock + (size_t)((j0 + j) / NR) * NR * kc;
      int w = cols - j < NR ? cols - j : NR;
      for (int s = 0; s < rows; s += MR) {
        int h = rows - s < MR ? rows - s : MR;
        float* c = g->C + (size_t)(i0 + s) * g->n + j0 + j;
        if (h == MR && w == NR) {
          ukernel(kc, ap + (size_t)s * kc, bpanel, c, g->n, first, last, i0 + s, j0 + j);
        } else {
          ukernel(kc, ap + (size_t)s * kc, bpanel, tile, NR, 1, NULL, 0, 0);
          for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++)
              c[r * g->n + q] = first ? tile[r * NR + q] : c[r * g->n + q] + tile[r * NR + q];
          if (last) vn_tile_out(last, g->C, g->n, i0 + s, j0 + j, h, w);
        }
      }
    }
  }
  vn_task_finish(&g->ep, g->C, g->n, i0, rows, j0, cols, sums ? acc : NULL);
}

static void gemm(const float* A, const float* B, float* C, int m, int k, int n, int ta, int tb,
                 int rnd, const struct vn_epilogue* ep) {
  if (m <= 0) return;
  if (n <= 0 || k <= 0) {
    vn_gemm_degenerate(A, ta, C, m, k, n, ep);
    return;
  }
  struct gemm g = {A, B, C, m, k, n, ta, tb, rnd};
  if (ep) g.ep = *ep;
  g.npad = (n + NR - 1) / NR * NR;
  g.kblocks = (k + KC - 1) / KC;
  g.bp = vn_shared_scratch(0, (size_t)k * g.npad);
  // Small products run in the calling thread (a parallel region costs more than they do).
  int serial = (int64_t)m * n * k < (1 << 20);
  int npack = g.kblocks * (g.npad / NR);
  if (serial)
    for (int t = 0; t < npack; t++) pack_b_task(&g, t, 0);
  else
    vn_parallel(npack, pack_b_task, &g);
  // Tiles: rows as vn_row_tile balances them; columns split until there are a few tasks per
  // thread (neither changes anything in the result, only the balance).
  int threads = serial ? 1 : vn_nthreads(), panels = g.npad / NR, per = panels;
  g.mc = vn_row_tile(m, MR, MC, threads);
  g.mtiles = (m + g.mc - 1) / g.mc;
  while (threads > 1 && per > 1 && g.mtiles * ((panels + per - 1) / per) < 4 * threads)
    per = (per + 1) / 2;
  g.nc = per * NR;
  g.ntiles = (panels + per - 1) / per;
  // Column tiles would each pack the same rows of op(A) (the weight gradient's dy^T, k = the
  // batch's rows): pack them once, in parallel, before the products.
  if (g.ntiles > 1 && !serial) {
    g.ap = vn_shared_scratch(2, (size_t)g.mtiles * g.kblocks * MC * KC);
    vn_parallel(g.mtiles * g.kblocks, pack_a_task, &g);
  }
  if (serial)
    for (int t = 0; t < g.mtiles * g.ntiles; t++) gemm_task(&g, t, 0);
  else
    vn_parallel(g.mtiles * g.ntiles, gemm_task, &g);
}

// Batches of small products go one product per task (each single-threaded inside).
struct bmm_ctx {
  const float *A, *B;
  float* C;
  int m, k, n, ta, tb, rnd;
  int64_t sa, sb;
};

static void small_gemm(const float* A, const float* B, float* C, int m, int k, int n, int ta,
                       int tb, int rnd, int tid) {
  // Scalar-order-free simple path for batched products: c[i, j] = sum_p a(i, p) b(p, j) with
  // p in order, vectorised over j (op(B) rows contiguous when tb = 0). bf16 (rnd): op(B) is
  // rounded into the thread's scratch first, a(i, p) as it is read.
  if (rnd) {
    float* r = vn_thread_scratch(tid, (size_t)k * n);
    for (int p = 0; p < k; p++)
      for (int j = 0; j < n; j++)
        r[(size_t)p * n + j] = vn_bf16_round(tb ? B[(size_t)j * k + p] : B[(size_t)p * n + j]);
    B = r;
    tb = 0;
  }
  for (int i = 0; i < m; i++) {
    float* c = C + (size_t)i * n;
    for (int j = 0; j < n; j++) c[j] = 0.f;
    for (int p = 0; p < k; p++) {
      float a = ta ? A[(size_t)p * m + i] : A[(size_t)i * k + p];
      if (rnd) a = vn_bf16_round(a);
      if (!tb) {
        const float* b = B + (size_t)p * n;
        int j = 0;
        vf av = vsplat(a);
        for (; j + VL <= n; j += VL) vst(c + j, vld(c + j) + av * vld(b + j));
        for (; j < n; j++) c[j] += a * b[j];
      } else {
        for (int j = 0; j < n; j++) c[j] += a * B[(size_t)j * k + p];
      }
    }
  }
}

static void bmm_task(void* ctx, int b, int tid) {
  const struct bmm_ctx* x = ctx;
  small_gemm(x->A + b * x->sa, x->B + b * x->sb, x->C + (size_t)b * x->m * x->n, x->m, x->k,
             x->n, x->ta, x->tb, x->rnd, tid);
}

static void bmm(const float* A, const float* B, float* C, int batch, int m, int k, int n, int ta,
                int tb, int64_t sa, int64_t sb, int rnd) {
  if (batch == 1 || (int64_t)m * n * k >= 64 * 64 * 64) {
    for (int b = 0; b < batch; b++)
      gemm(A + b * sa, B + b * sb, C + (size_t)b * m * n, m, k, n, ta, tb, rnd, NULL);
    return;
  }
  struct bmm_ctx x = {A, B, C, m, k, n, ta, tb, rnd, sa, sb};
  vn_parallel(batch, bmm_task, &x);
}

// ---------------------------------------------------------------------------------------------
// Multi-head self-attention from the qkv projection, one task per (sequence, head); see api.c.
// ---------------------------------------------------------------------------------------------

// For r < R (R <= 4): out[r * ors + 0..len) = sum_{j<n} w[r * wrs + j * ws] * X[j * xs + 0..len):
// weighted sums of rows (P @ v, dS @ k ...) or, with X a transposed head [hd, Tp], rows of
// scores. Four rows share each load of X, and 4 x 2 accumulators keep the FMA units busy (one
// row alone is bound by the latency of its chain). Each output element is the same sum in the
// same order whatever R is, so the row blocking never changes a result.
#define COMBINE(R)                                                                          \
  static void combine##R(const float* restrict w, int wrs, int ws, const float* restrict X,  \
                         int64_t xs, int n, float* restrict out, int ors, int len) {        \
    int c = 0;                                                                              \
    for (; c + 2 * VL <= len; c += 2 * VL) {                                                \
      vf a0[R], a1[R];                                                                      \
      for (int r = 0; r < R; r++) a0[r] = a1[r] = (vf){0};                                  \
      for (int j = 0; j < n; j++) {                                                         \
        vf x0 = vld(X + j * xs + c), x1 = vld(X + j * xs + c + VL);                         \
        for (int r = 0; r < R; r++) {                                                       \
          float s = w[r * wrs + j * ws];                                                    \
          a0[r] += s * x0;                                                                  \
          a1[r] += s * x1;                                                                  \
        }                                                                                   \
      }                                                                                     \
      for (int r = 0; r < R; r++) {                                                         \
        vst(out + r * ors + c, a0[r]);                                                      \
        vst(out + r * ors + c + VL, a1[r]);                                                 \
      }                                                                                     \
    }                                                                                       \
    for (; c + VL <= len; c += VL) {                                                        \
      vf a[R];                                                                              \
      for (int r = 0; r < R; r++) a[r] = (vf){0};                                           \
      for (int j = 0; j < n; j++) {                                                         \
        vf x0 = vld(X + j * xs + c);                                                        \
        for (int r = 0; r < R; r++) a[r] += w[r * wrs + j * ws] * x0;                       \
      }                                                                                     \
      for (int r = 0; r < R; r++) vst(out + r * ors + c, a[r]);                             \
    }                                                                                       \
    for (; c < len; c++) {                                                                  \
      for (int r = 0; r < R; r++) {                                                         \
        float a = 0.f;                                                                      \
        for (int j = 0; j < n; j++) a += w[r * wrs + j * ws] * X[j * xs + c];               \
        out[r * ors + c] = a;                                                               \
      }                                                                                     \
    }                                                                                       \
  }
COMBINE(4)
COMBINE(1)

// Rows 0 .. rows of the combination above, four at a time.
static void combine_rows(const float* restrict w, int wrs, int ws, const float* restrict X,
                         int64_t xs, int n, float* restrict out, int ors, int len, int rows) {
  int r = 0;
  for (; r + 4 <= rows; r += 4)
    combine4(w + (int64_t)r * wrs, wrs, ws, X, xs, n, out + (int64_t)r * ors, ors, len);
  for (; r < rows; r++)
    combine1(w + (int64_t)r * wrs, wrs, ws, X, xs, n, out + (int64_t)r * ors, ors, len);
}

// M[c * Tp + j] = X[j * xs + c] for j < T, zero for T <= j < Tp.
static void transpose_head(const float* restrict X, int64_t xs, int T, int Tp, int hd,
                           float* restrict M) {
#if defined(VN_AVX512)
  if (hd % 16 == 0) {  // 16 x 16 blocks in registers; Tp is a multiple of 16
    for (int j0 = 0; j0 < Tp; j0 += 16)
      for (int c0 = 0; c0 < hd; c0 += 16) {
        __m512i v[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
          v[j] = j0 + j < T ? _mm512_loadu_si512(X + (j0 + j) * xs + c0) : _mm512_setzero_si512();
        vn_transpose16(v);
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) _mm512_storeu_si512(M + (c0 + q) * Tp + j0, v[q]);
      }
    return;
  }
#endif
  for (int c = 0; c < hd; c++) {
    for (int j = 0; j < T; j++) M[c * Tp + j] = X[j * xs + c];
    for (int j = T; j < Tp; j++) M[c * Tp + j] = 0.f;
  }
}

struct attn {
  const float *qkv, *dout, *dprobs, *probs_in;
  float *out, *probs, *dqkv;
  int B, T, H, hd;
  float scale;
  uint16_t* out16;  // forward: out rounded to bf16 (vn_bf16_bits) here instead, or NULL
};

// Tasks of the attention kernels: one per sequence (its heads in turn, its rows of qkv fetched
// ahead as one contiguous block: a head alone reads 128-byte pieces of rows 6 KB apart, which the
// caches fetch one miss at a time), or one per (sequence, head) when there are few sequences.
#define ATTN_SEQ_TASKS 16
static inline void prefetch_rows(const float* p, size_t n) {
  for (size_t i = 0; i < n; i += 16) __builtin_prefetch(p + i);
}

static void attention_head(const struct attn* a, int b, int h, int tid) {
  const int T = a->T, hd = a->hd, D = a->H * hd, D3 = 3 * D, Tp = (T + VL - 1) / VL * VL;
  size_t o16 = a->out16 ? (size_t)T * hd : 0;  // out16's rows before rounding, after S
  float* kt = vn_thread_scratch(tid, (size_t)hd * Tp + (size_t)T * Tp + o16);
  float* S = kt + (size_t)hd * Tp;  // [T, Tp] scores, then probabilities
  const float* base = a->qkv + (size_t)b * T * D3 + h * hd;  // q of token 0; k at + D, v + 2D
  float* P = a->probs + ((size_t)b * a->H + h) * T * T;
  transpose_head(base + D, D3, T, Tp, hd, kt);
  combine_rows(base, D3, 1, kt, Tp, hd, S, Tp, Tp, T);  // S = q k^T
  // The lanes of the last vector before T (a mask: lane-by-lane writes stall on the reload).
  vi lane;
  for (int l = 0; l < VL; l++) lane[l] = l;
  const vi live = lane < (vi){0} + (T - (Tp - VL));
  const vf lowest = vsplat(-3.4e38f), zero = {0};
  vf sums[4] = {zero, zero, zero, zero};
  int pend = 0;
  for (int i = 0; i < T; i++) {
    float* row = S + (size_t)i * Tp;
    vf mx = lowest;
    for (int j = 0; j < Tp; j += VL) {
      vf s = vld(row + j) * a->scale;
      if (j + VL > T) s = vsel(live, s, lowest);
      vst(row + j, s);
      mx = vmax(mx, s);
    }
    vf m = vsplat(vhmax(mx)), sum = {0};
    for (int j = 0; j < Tp; j += VL) {
      vf e = vexp(vld(row + j) - m);
      if (j + VL > T) e = vsel(live, e, zero);
      vst(row + j, e);
      sum += e;
    }
    // Each row's sum is vhsum's (lanes in order from 0), four rows' chains interleaved.
    sums[pend++] = sum;
    if (pend < 4 && i < T - 1) continue;
    float tot[4] = {0.f, 0.f, 0.f, 0.f};
    for (int l = 0; l < VL; l++)
      for (int q = 0; q < 4; q++) tot[q] += sums[q][l];
    // The probabilities go straight to P's rows of T (the last vector's live lanes one by one:
    // a whole vector would spill into the next row, or past the head).
    for (int q = 0; q < pend; q++) {
      int r = i - pend + 1 + q, j = 0;
      const float* pr = S + (size_t)r * Tp;
      float* pd = P + (size_t)r * T;
      vf inv = vsplat(1.f / tot[q]);
      for (; j + VL <= T; j += VL) vst(pd + j, vld(pr + j) * inv);
      if (j < T) {
        vf last = vld(pr + j) * inv;
        for (int l = 0; j + l < T; l++) pd[j + l] = last[l];
      }
    }
    pend = 0;
  }
  // out_i = sum_j P_ij v_j, the heads side by side in out [B*T, D] (or, for out16, in [T, hd]
  // after S, then rounded into out16's rows).
  if (!a->out16) {
    combine_rows(P, T, 1, base + 2 * D, D3, T, a->out + (size_t)b * T * D + h * hd, D, hd, T);
    return;
  }
  float* o = S + (size_t)T * Tp;
  combine_rows(P, T, 1, base + 2 * D, D3, T, o, hd, hd, T);
  for (int i = 0; i < T; i++)
    vn_to_bf16(o + (size_t)i * hd, a->out16 + ((size_t)b * T + i) * D + h * hd, hd);
}

static void attention_task(void* ctx, int t, int tid) {
  const struct attn* a = ctx;
  if (a->B < ATTN_SEQ_TASKS) return attention_head(a, t / a->H, t % a->H, tid);
  prefetch_rows(a->qkv + (size_t)t * a->T * 3 * a->H * a->hd, (size_t)a->T * 3 * a->H * a->hd);
  for (int h = 0; h < a->H; h++) attention_head(a, t, h, tid);
}

static int attention_tasks(int B, int H) { return B < ATTN_SEQ_TASKS ? B * H : B; }

static void attention(const float* qkv, float* out, uint16_t* out16, float* probs, int B, int T,
                      int H, int hd, float scale) {
  struct attn a = {qkv, 0, 0, 0, out, probs, 0, B, T, H, hd, scale, out16};
  vn_parallel(attention_tasks(B, H), attention_task, &a);
}

// With P the probs and dP = dout v^T + dprobs: dS = P * (dP - rowsum(P * dP)) * scale,
// dq = dS k, dk = dS^T q, dv = P^T dout.
static void attention_grad_head(const struct attn* a, int b, int h, int tid) {
  const int T = a->T, hd = a->hd, D = a->H * hd, D3 = 3 * D, Tp = (T + VL - 1) / VL * VL;
  float* vt = vn_thread_scratch(tid, (size_t)hd * Tp + (size_t)T * Tp);
  float* ds = vt + (size_t)hd * Tp;  // [T, Tp]
  const float* base = a->qkv + (size_t)b * T * D3 + h * hd;
  float* dbase = a->dqkv + (size_t)b * T * D3 + h * hd;
  const float* dO = a->dout + (size_t)b * T * D + h * hd;  // row stride D
  const float* P = a->probs_in + ((size_t)b * a->H + h) * T * T;
  const float* dPin = a->dprobs ? a->dprobs + ((size_t)b * a->H + h) * T * T : NULL;
  transpose_head(base + 2 * D, D3, T, Tp, hd, vt);
  combine_rows(dO, D, 1, vt, Tp, hd, ds, Tp, Tp, T);  // dP = dout v^T
  for (int i = 0; i < T; i++) {
    float* d = ds + (size_t)i * Tp;
    const float* p = P + i * T;
    float rs = 0.f;
    if (dPin)
      for (int j = 0; j < T; j++) d[j] += dPin[i * T + j];
    for (int j = 0; j < T; j++) rs += p[j] * d[j];
    for (int j = 0; j < T; j++) d[j] = a->scale * p[j] * (d[j] - rs);
  }
  combine_rows(ds, Tp, 1, base + D, D3, T, dbase, D3, hd, T);       // dq_i = sum_j dS_ij k_j
  combine_rows(ds, 1, Tp, base, D3, T, dbase + D, D3, hd, T);       // dk_j = sum_i dS_ij q_i
  combine_rows(P, 1, T, dO, D, T, dbase + 2 * D, D3, hd, T);        // dv_j = sum_i P_ij dO_i
}

static void attention_grad_task(void* ctx, int t, int tid) {
  const struct attn* a = ctx;
  if (a->B < ATTN_SEQ_TASKS) return attention_grad_head(a, t / a->H, t % a->H, tid);
  const size_t D = (size_t)a->H * a->hd, rows = (size_t)t * a->T;
  prefetch_rows(a->qkv + rows * 3 * D, a->T * 3 * D);
  prefetch_rows(a->dout + rows * D, a->T * D);
  prefetch_rows(a->probs_in + (size_t)t * a->H * a->T * a->T, (size_t)a->H * a->T * a->T);
  for (int h = 0; h < a->H; h++) attention_grad_head(a, t, h, tid);
}

static void attention_grad(const float* dout, const float* dprobs, const float* qkv,
                           const float* probs, float* dqkv, int B, int T, int H, int hd,
                           float scale) {
  struct attn a = {qkv, dout, dprobs, probs, 0, 0, dqkv, B, T, H, hd, scale};
  vn_parallel(attention_tasks(B, H), attention_grad_task, &a);
}

// The multiply-add peak of one core, as vn_peak_gflops measures it: iters steps of 2 MR
// independent vectors acc = acc * a + b (one FMA each where the ISA has one; else a multiply and
// an add), accumulator j starting at j in every lane, as many as the micro-kernel keeps.
// Returns the FLOPs done (2 a lane a step); *sum: every lane's final value, summed.
static double peak(long iters, float a, float b, double* sum) {
  vf acc[2 * MR], va = vsplat(a), vb = vsplat(b);
#pragma GCC unroll 24
  for (int j = 0; j < 2 * MR; j++) acc[j] = vsplat((float)j);
  for (long i = 0; i < iters; i++) {
#pragma GCC unroll 24
    for (int j = 0; j < 2 * MR; j++) acc[j] = acc[j] * va + vb;
  }
  double s = 0.0;
  for (int j = 0; j < 2 * MR; j++)
    for (int l = 0; l < VL; l++) s += acc[j][l];
  *sum = s;
  return 2.0 * 2 * MR * VL * (double)iters;
}

const struct vn_impl SFX(vn_dense) = {.bmm = bmm,
                                      .gemm_ep = gemm,
                                      .attention = attention,
                                      .attention_grad = attention_grad,
                                      .peak = peak};
