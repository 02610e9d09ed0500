// Shared declarations of libvitssl_native: the thread pool (api.c), the per-ISA kernel tables
// (dense.c and ops.c, each compiled once per instruction set by build.sh) and generic vectors.
//
// Each kernel file is compiled three times: -DVN_AVX512 (16 float lanes), -DVN_AVX2 (8 lanes,
// FMA) and with neither (SSE2, 4 lanes: the x86-64 baseline, or any other target). GCC's vector
// extensions keep one source for all three; SFX() gives each build's symbols their own names.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(VN_AVX512)
#include <immintrin.h>
#define VL 16
#define SFX(name) name##_avx512
#elif defined(VN_AVX2)
#define VL 8
#define SFX(name) name##_avx2
#else
#define VL 4
#define SFX(name) name##_base
#endif

typedef float vf __attribute__((vector_size(VL * 4)));
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4), may_alias));
typedef int32_t vi __attribute__((vector_size(VL * 4)));

static inline vf vld(const float* p) { return *(const vfu*)p; }
static inline void vst(float* p, vf v) { *(vfu*)p = v; }
// x - 0 is exactly x (also for -0), so GCC folds it to one broadcast; x + 0 is not (-0 + 0).
static inline vf vsplat(float x) { return x - (vf){0}; }
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf vmin(vf a, vf b) { return vsel(a < b, a, b); }
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
static inline float vhsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < VL; i++) s += v[i];
  return s;
}
static inline float vhmax(vf v) {
  float s = v[0];
  for (int i = 1; i < VL; i++) s = v[i] > s ? v[i] : s;
  return s;
}

// exp(x) for x <= 88: 2^n p(r), n = round(x / ln 2) by the 1.5 * 2^23 trick, |r| <= ln 2 / 2.
static inline vf vexp(vf x) {
  x = vmin(vmax(x, vsplat(-87.f)), vsplat(88.f));
  const vf magic = vsplat(12582912.f);
  vf shifted = x * 1.44269504088896341f + magic;
  vf n = shifted - magic;
  vf r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  vf p = vsplat(0.00138888892f);
  p = p * r + 0.00833333377f;
  p = p * r + 0.0416666679f;
  p = p * r + 0.166666672f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  vi ni = (vi)shifted - (vi)magic;
  vi e = (ni + 127) << 23;
  return p * (vf)e;
}

// bf16 rounding (mixed precision, see api.c's vn_set_precision): the float32 nearest to x whose
// low 16 bits are zero, ties to even (the mantissa's last kept bit 0). A NaN stays a NaN (quiet,
// sign and top payload bits kept); values past bf16's largest finite round to infinity, as they
// should; subnormals round like any other value. Every bf16 path rounds with this function, so
// they all see the same inputs.
static inline uint32_t vn_bf16_bits(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u | 0x00400000u) >> 16;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
#if defined(VN_AVX512)
// vn_bf16_bits on 16 lanes, the bf16 in each lane's high half (low half garbage): the bf16
// GEMM's packing (bf16.c) and vn_store_bf16.
static inline __m512i vn_rne16(__m512 x) {
  __m512i u = _mm512_castps_si512(x);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
}
#endif
// y[0..VL) = vn_bf16_bits of v's lanes (storing an activation as bf16).
static inline void vn_store_bf16(uint16_t* y, vf v) {
#if defined(VN_AVX512)  // GCC makes slow code of the generic form for 16 lanes
  __m512i r = _mm512_srli_epi32(vn_rne16((__m512)v), 16);
  _mm256_storeu_si256((__m256i*)y, _mm512_cvtepi32_epi16(r));
#else
  typedef uint32_t vu __attribute__((vector_size(VL * 4)));
  typedef uint16_t vh __attribute__((vector_size(VL * 2)));
  vu u = (vu)v;
  vu r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, q = (u | 0x00400000u) >> 16;
  vu nan = (vu)((u & 0x7fffffffu) > 0x7f800000u);
  vh h = __builtin_convertvector((q & nan) | (r & ~nan), vh);
  __builtin_memcpy(y, &h, sizeof h);
#endif
}
// y[i] = vn_bf16_bits(x[i]) for i < n, VL at a time.
static inline void vn_to_bf16(const float* x, uint16_t* y, int n) {
  int i = 0;
  for (; i + VL <= n; i += VL) vn_store_bf16(y + i, vld(x + i));
  for (; i < n; i++) y[i] = (uint16_t)vn_bf16_bits(x[i]);
}
static inline float vn_bf16_round(float x) {
  uint32_t u = vn_bf16_bits(x) << 16;
  float r;
  __builtin_memcpy(&r, &u, 4);
  return r;
}

// The thread pool (api.c). vn_parallel runs fn(ctx, t, tid) for every t < ntasks on the pool's
// threads (tid < vn_nthreads(); the caller is tid 0) and returns when all are done. Tasks must
// write disjoint outputs, so the result never depends on which thread ran which task.
typedef void (*vn_task)(void* ctx, int task, int tid);
void vn_parallel(int ntasks, vn_task fn, void* ctx);
int vn_nthreads(void);
// Grow-only 64-byte-aligned scratch: per thread (called by that thread only), or shared (called
// by the caller of vn_parallel before it starts; slot < 4).
float* vn_thread_scratch(int tid, size_t nfloats);
float* vn_shared_scratch(int slot, size_t nfloats);

// The epilogue of a GEMM C[m, n] = op(A) @ op(B) (vn_linear, vn_linear_grad in api.c), done by
// the task that owns each tile of C, in the pass that produces it:
// - bias[n]: added to every row of the task's tile after its last KC block: C = sum + bias, the
//   same float32 addition as a separate Add of the bias;
// - res[m, n] (row stride n): then added too, C = res + (sum + bias), a residual connection's
//   Add;
// - act, act_out[m, n]: then act_out = act(C) row by row (GELU after fc1; C keeps the
//   pre-activation its gradient needs); with act_out16[m, n] instead, act(C) rounded to bf16
//   (vn_bf16_bits) is stored there: what a bf16 product reads of act_out, in half the bytes;
// - dact, dact_x[m, n]: then C = dact(C, dact_x) row by row, in place (GELU's gradient at the
//   pre-activation dact_x after fc2's input gradient: C = dh * gelu'(x), the GeluGrad kernel's
//   float32 operations);
// - rowsum[m]: the sum over k of each row of op(A) (a linear layer's bias gradient, with op(A) =
//   dy^T), summed by the tasks of the first column tile as they pack their rows, in double, k in
//   order: the same sum as the Sum kernel's column sums (ops.c, sum_cols) of dy.
// NULL: none.
struct vn_epilogue {
  const float* bias;
  const float* res;
  float* rowsum;
  void (*act)(const float* x, float* y, int n);
  float* act_out;
  void (*dact)(float* dx, const float* x, int n);
  const float* dact_x;
  uint16_t* act_out16;
};

// The activation of one row of C (c, cols elements, at offset `at` of act_out): into act_out,
// or rounded to bf16 into act_out16 (act's float32 results, in pieces, then vn_bf16_bits).
static inline void vn_act_row(const struct vn_epilogue* ep, const float* c, size_t at, int cols) {
  if (!ep->act_out16) {
    ep->act(c, ep->act_out + at, cols);
    return;
  }
  float tmp[256];
  for (int q = 0; q < cols; q += 256) {
    int len = cols - q < 256 ? cols - q : 256;
    ep->act(c + q, tmp, len);
    vn_to_bf16(tmp, ep->act_out16 + at + q, len);
  }
}

// The output pass of rows x cols of C at (i0, j0) (row stride ldc): bias and res as above.
static inline void vn_tile_out(const struct vn_epilogue* ep, float* C, int ldc, int i0, int j0,
                               int rows, int cols) {
  for (int r = 0; r < rows; r++) {
    float* c = C + (size_t)(i0 + r) * ldc + j0;
    if (ep->bias) {
      const float* b = ep->bias + j0;
      for (int q = 0; q < cols; q++) c[q] = c[q] + b[q];
    }
    if (ep->res) {
      const float* x = ep->res + (size_t)(i0 + r) * ldc + j0;
      for (int q = 0; q < cols; q++) c[q] = x[q] + c[q];
    }
    if (ep->act) vn_act_row(ep, c, (size_t)(i0 + r) * ldc + j0, cols);
  }
}

// acc[r] += op(A)(i0 + r, k0 + p) for p < kc in order, r < rows (op(A) [m, k]: A stored [m, k]
// when ta = 0, [k, m] when ta = 1).
static inline void vn_rowsum_block(const float* A, int ta, int m, int k, int i0, int rows,
                                   int k0, int kc, double* acc) {
  if (ta) {
    for (int p = 0; p < kc; p++) {
      const float* a = A + (size_t)(k0 + p) * m + i0;
      for (int r = 0; r < rows; r++) acc[r] += a[r];
    }
  } else {
    for (int r = 0; r < rows; r++) {
      const float* a = A + (size_t)(i0 + r) * k + k0;
      double s = acc[r];
      for (int p = 0; p < kc; p++) s += a[p];
      acc[r] = s;
    }
  }
}

// The bias and the residual of ep alone (what a micro-kernel adds in its registers).
static inline struct vn_epilogue vn_adds(const struct vn_epilogue* ep) {
  struct vn_epilogue adds = {ep->bias, ep->res, NULL, NULL, NULL};
  return adds;
}

// What a task's epilogue leaves after the bias and the residual are added: the activation over
// the tile's rows, then the rows' sums (acc, or NULL).
static inline void vn_task_finish(const struct vn_epilogue* ep, float* C, int ldc, int i0,
                                  int rows, int j0, int cols, const double* acc) {
  if (ep->act)
    for (int r = 0; r < rows; r++) {
      size_t at = (size_t)(i0 + r) * ldc + j0;
      vn_act_row(ep, C + at, at, cols);
    }
  if (ep->dact)
    for (int r = 0; r < rows; r++) {
      size_t at = (size_t)(i0 + r) * ldc + j0;
      ep->dact(C + at, ep->dact_x + at, cols);
    }
  if (acc)
    for (int r = 0; r < rows; r++) ep->rowsum[i0 + r] = (float)acc[r];
}

// A GEMM task's whole epilogue on its tile (rows x cols of C at (i0, j0), row stride ldc), for a
// micro-kernel that adds nothing itself: the bias and residual pass, then vn_task_finish.
static inline void vn_task_epilogue(const struct vn_epilogue* ep, float* C, int ldc, int i0,
                                    int rows, int j0, int cols, const double* acc) {
  struct vn_epilogue adds = vn_adds(ep);
  if (ep->bias || ep->res) vn_tile_out(&adds, C, ldc, i0, j0, rows, cols);
  vn_task_finish(ep, C, ldc, i0, rows, j0, cols, acc);
}

// A product with nothing to sum (k = 0: C = 0) or no columns (n = 0), with its epilogue.
static inline void vn_gemm_degenerate(const float* A, int ta, float* C, int m, int k, int n,
                                      const struct vn_epilogue* ep) {
  if (n > 0) {
    memset(C, 0, (size_t)m * n * sizeof(float));
    if (ep) vn_tile_out(ep, C, n, 0, 0, m, n);
  }
  if (ep && ep->rowsum) {
    for (int i0 = 0; i0 < m; i0 += 64) {
      double acc[64];
      int rows = m - i0 < 64 ? m - i0 : 64;
      for (int r = 0; r < rows; r++) acc[r] = 0.0;
      if (k > 0) vn_rowsum_block(A, ta, m, k, i0, rows, 0, k, acc);
      for (int r = 0; r < rows; r++) ep->rowsum[i0 + r] = (float)acc[r];
    }
  }
}

// Rows of a parallel GEMM's row tiles: a multiple of mr, at most mc, so that the tiles split
// evenly over `threads`. Threads take tasks in turn, so a last round that keeps some of them
// idle is time lost (2176 rows in tiles of 96: 23 tiles, 12 rounds of 2 threads, one of them
// half idle; tiles of 84: 26, 13 rounds, none). Of mc / mr strips a tile down to half that:
// the fewest strips a thread runs (rounds times strips), the larger tile on a tie. A tile's
// size never changes a result: each element is summed in the same order in any tile.
// Example: vn_row_tile(2176, 12, 96, 2) == 84; vn_row_tile(2176, 12, 96, 1) == 96.
static inline int vn_row_tile(int m, int mr, int mc, int threads) {
  int strips = (m + mr - 1) / mr, best = mc / mr;
  if (threads <= 1) return mc;
  long cost = (long)((strips + best - 1) / best + threads - 1) / threads * best;
  for (int s = best - 1; s >= (mc / mr + 1) / 2; s--) {
    long c = (long)((strips + s - 1) / s + threads - 1) / threads * s;
    if (c < cost) {
      cost = c;
      best = s;
    }
  }
  return best * mr;
}

// Every kernel, in one table per instruction set (see api.c for the meaning of each).
struct vn_impl {
  // rnd = 1: bf16 emulated (inputs rounded by vn_bf16_round as they are packed, float32 math).
  void (*bmm)(const float* A, const float* B, float* C, int batch, int m, int k, int n, int ta,
              int tb, int64_t sa, int64_t sb, int rnd);
  // One product with its epilogue (ep may be NULL).
  void (*gemm_ep)(const float* A, const float* B, float* C, int m, int k, int n, int ta, int tb,
                  int rnd, const struct vn_epilogue* ep);
  // out16 (NULL: out): out rounded to bf16 (vn_bf16_bits), stored as uint16_t.
  void (*attention)(const float* qkv, float* out, uint16_t* out16, float* probs, int B, int T,
                    int H, int hd, float scale);
  void (*attention_grad)(const float* dout, const float* dprobs, const float* qkv,
                         const float* probs, float* dqkv, int B, int T, int H, int hd,
                         float scale);
  void (*binary)(int op, const float* a, const float* b, float* out, const int32_t* meta);
  void (*sum_rows)(const float* x, float* out, int rows, int cols, float div);
  void (*sum_cols)(const float* x, float* out, int rows, int cols, float div);
  // out[c] = ((0 + x[0, c]) + x[1, c]) + ...: float32 adds in row order (tfjs's Tile gradient).
  void (*sum_cols_f32)(const float* x, float* out, int rows, int cols);
  void (*transpose)(const float* src, float* dst, int batch, int rows, int cols, int inner);
  void (*transpose_nd)(const float* src, float* dst, int rank, const int32_t* meta);
  void (*copy_rows)(const float* src, float* dst, int rows, int len, int src_stride,
                    int dst_stride);
  // y16 (NULL: y): y rounded to bf16 (vn_bf16_bits), stored as uint16_t.
  void (*layernorm)(const float* x, const float* g, const float* b, float* y, uint16_t* y16,
                    int rows, int d, float eps);
  void (*layernorm_grad)(const float* dy, const float* x, const float* g, const float* dres,
                         float* dx, float* dg,
                         float* db, int rows, int d, float eps);
  void (*batchnorm)(const float* x, const float* g, const float* b, float* y, float* mean,
                    float* var, int rows, int d, float eps);
  void (*batchnorm_grad)(const float* dy, const float* x, const float* g, const float* mean,
                         const float* var, const float* dmean, const float* dvar, float* dx,
                         float* dg, float* db, int rows, int d, float eps);
  void (*gelu)(const float* x, float* y, int n);
  void (*gelu_rows)(const float* x, float* y, int n);  // serial (for an epilogue)
  void (*gelu_grad)(const float* dy, const float* x, float* dx, int n);
  void (*gelu_grad_rows)(float* dx, const float* x, int n);  // serial, in place (an epilogue)
  void (*adamw)(const float* p, const float* g, const float* m, const float* v, float* p1,
                float* m1, float* v1, int n, float c1m, float b2, float c2, float sbc2, float eps,
                float decay, float step, int has_decay);
  void (*ema)(const float* t, const float* s, float* t1, int n, float mom, float one_minus);
  // adamw and ema on count tensors in place, one job (ptrs: p, g, m, v or t, s per tensor).
  void (*adamw_many)(int count, void* const* ptrs, const int32_t* n, const int32_t* has_decay,
                     float c1m, float b2, float c2, float sbc2, float eps, float decay,
                     float step);
  void (*ema_many)(int count, void* const* ptrs, const int32_t* n, float mom, float one_minus);
  void (*unary)(int op, const float* x, float* y, int n, float alpha);
  void (*clip)(const float* x, float* y, int n, float lo, float hi);
  void (*gather_idx)(const float* src, float* dst, int rank, const int32_t* meta,
                     const int32_t* idx);
  void (*dwconv)(const float* x, const float* f, float* y, const int32_t* meta);
  void (*crop_and_resize)(const float* img, const float* boxes, const int32_t* ind, float* out,
                          const int32_t* meta, float extrapolation);
  int (*topk)(const float* x, float* vals, int32_t* idx, int rows, int n, int k);
  // FLOPs of iters steps of independent float32 multiply-adds acc = acc * a + b, timed by
  // vn_peak_gflops; *sum: the accumulators' lanes summed (dense.c).
  double (*peak)(long iters, float a, float b, double* sum);
};

// Each build defines its half of the table as static data (no code of a wider instruction set
// runs before the CPU check): dense.c (FMA contraction on) the products, ops.c (contraction off,
// so that elementwise results equal tfjs's unfused float32 ops) the rest.
extern const struct vn_impl SFX(vn_dense), SFX(vn_ops);

// bf16.c (built once, with -mavx512bf16 -mamx-*; call only where the CPU has AVX512-BF16, and
// with amx = 1 only where it has AMX-BF16 and the tile state is granted): the same product as
// vn_impl.bmm on bf16-rounded inputs, by VDPBF16PS dot products or TDPBF16PS tiles (float32 sums).
void vn_bmm_bf16(const float* A, const float* B, float* C, int batch, int m, int k, int n, int ta,
                 int tb, int64_t sa, int64_t sb, int amx);
// One such product with its epilogue (ep may be NULL). src16: bit 1, A is stored as bf16
// (uint16_t, vn_bf16_bits; ta = 0 only), bit 2, B is (tb = 0 only): rows of bf16 read as they
// are, the same packed operands as from their float32 values. (Not with ep->rowsum.)
void vn_gemm_bf16_ep(const void* A, const void* B, float* C, int m, int k, int n, int ta, int tb,
                     int amx, const struct vn_epilogue* ep, int src16);
// The bf16 dot-product peak of one core (VDPBF16PS, or TDPBF16PS tiles with amx = 1, the tile
// state configured here): iters steps of independent accumulators acc += a * b + a * b per lane
// (a, b rounded to bf16), accumulator j starting at j. Returns the FLOPs done; *sum as vn_impl's
// peak.
double vn_peak_bf16(long iters, float a, float b, int amx, double* sum);

#if defined(VN_AVX512)
// The 16 x 16 matrix of 32-bit words in r[0..16) transposed in place: at each level b = 8, 4,
// 2, 1, rows i and i + b (bit b of i clear) swap their off-diagonal b x b blocks.
static inline void vn_transpose16(__m512i r[16]) {
  static const int32_t idx[4][2][16] = {
      {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
       {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}},
      {{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
       {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}},
      {{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
       {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}},
      {{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
       {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}},
  };
#pragma GCC unroll 4
  for (int lv = 0; lv < 4; lv++) {
    const int b = 8 >> lv;
    const __m512i ilo = _mm512_loadu_si512(idx[lv][0]), ihi = _mm512_loadu_si512(idx[lv][1]);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
      if (i & b) continue;
      __m512i a = r[i], c = r[i + b];
      r[i] = _mm512_permutex2var_epi32(a, ilo, c);
      r[i + b] = _mm512_permutex2var_epi32(a, ihi, c);
    }
  }
}
#endif
