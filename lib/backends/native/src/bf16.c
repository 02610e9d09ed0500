// The bf16 GEMM on AVX512-BF16 (VDPBF16PS) or AMX-BF16 tiles (TDPBF16PS), built once with
// -mavx512bf16 -mamx-tile -mamx-bf16 by build.sh; api.c calls it only where the CPU has the
// instructions (vn_set_precision), and the AMX kernel only where Linux granted the tile state.
// The AMX kernel is UNTESTED on hardware (written on a CPU without AMX): it runs only with
// VITSSL_NATIVE_AMX=1 (see api.c) until tests/backends/native_bf16_test.ts passes on an AMX CPU.
// AMX: the same packed B (a 16-column half of a panel is a B tile: 16 pairs x 16 columns, row
// stride 2 NR), A packed k-contiguous per row (A tiles: 16 rows x 32 bf16), blocks of 32 x 32 of
// C in four accumulator tiles, stored to a buffer and added to C like an edge tile; kc is padded
// with zeros to a multiple of 32.
//
// C[m, n] = op(A) @ op(B) as dense.c's GEMM (same arguments, same GotoBLAS blocking), with both
// operands rounded to bf16 (vn_bf16_round, round to nearest even) as they are packed, and float32
// accumulation: each VDPBF16PS adds two exact bf16 products per lane to a float32 accumulator.
// Packed layout: pairs of k side by side, so one 32-bit broadcast of A carries a(i, 2p) and
// a(i, 2p + 1), and one 512-bit load of B carries 16 columns' pairs; an odd k is padded with a
// zero pair half. Every element of C is summed over k in the same order (KC blocks in turn,
// pairs in order) whatever tile or thread computes it, so results are bit-identical for any
// thread count. The instruction treats bf16 subnormals (|x| < 2^-126) as zero and flushes
// subnormal sums to zero; the emulated path (dense.c, rnd = 1) keeps them, so the two paths may
// differ there and, by the order of the two products within a pair, in the last bit of a sum.
// An operand may also come stored as bf16 (vn_gemm_bf16_ep's src16: an activation that
// vn_linear_gelu, vn_layernorm or vn_attention wrote rounded, as this file would round it): A
// row-major (ta = 0) or B row-major (tb = 0), whose pairs are then copied as they are, or, for
// A with k even, read in place by the micro-kernel (a row's pairs are the words it broadcasts).
#include <immintrin.h>
#include <string.h>

#include "vn.h"

#define MR 12  // 24 accumulators of 32 zmm registers
#define NR 32  // two zmm of float32 columns
#define KC 512  // even
#define MC (8 * MR)

typedef uint16_t bf;

// C[MR, NR] (row stride ldc) = (first ? 0 : C) + Ap strip @ Bp panel, kc2 pairs of k. With ep
// (the last KC block of a full tile at row ei, column ej of C), the bias and residual of
// vn_tile_out on the registers before they are stored: + bias, then res +, the same float32
// operations in the same order, without a second pass over C. (The activation stays a pass over
// the task's rows: called on 32 columns at a time it cost more than the pass.)
// A's pair p of row r is at ap + p * aps + r * ars: (2 MR, 2) packed, (2, lda) as stored.
static inline __attribute__((always_inline)) void ukernel(int kc2, const bf* restrict ap,
                                                          int64_t aps, int64_t ars,
                                                          const bf* restrict bp, float* restrict c,
                                                          int64_t ldc, int first,
                                                          const struct vn_epilogue* ep, int ei,
                                                          int ej) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++) c0[r] = c1[r] = _mm512_setzero_ps();
  for (int p = 0; p < kc2; p++) {
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + (size_t)p * 2 * NR);
    __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + (size_t)p * 2 * NR + NR);
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++) {
      int32_t pair;
      memcpy(&pair, ap + p * aps + r * ars, 4);
      __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      c0[r] = _mm512_dpbf16_ps(c0[r], a, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], a, b1);
    }
  }
  const float* bias = ep && ep->bias ? ep->bias + ej : NULL;
  const float* res = ep && ep->res ? ep->res + (size_t)ei * ldc + ej : NULL;
#pragma GCC unroll 16
  for (int r = 0; r < MR; r++) {
    float* row = c + r * ldc;
    __m512 v0 = c0[r], v1 = c1[r];
    if (!first) {
      v0 = _mm512_add_ps(_mm512_loadu_ps(row), v0);
      v1 = _mm512_add_ps(_mm512_loadu_ps(row + 16), v1);
    }
    if (bias) {
      v0 = _mm512_add_ps(v0, _mm512_loadu_ps(bias));
      v1 = _mm512_add_ps(v1, _mm512_loadu_ps(bias + 16));
    }
    if (res) {
      v0 = _mm512_add_ps(_mm512_loadu_ps(res + r * ldc), v0);
      v1 = _mm512_add_ps(_mm512_loadu_ps(res + r * ldc + 16), v1);
    }
    _mm512_storeu_ps(row, v0);
    _mm512_storeu_ps(row + 16, v1);
  }
}

struct gemm {
  const float *A, *B;
  const uint16_t *A16, *B16;  // instead of A, B: stored as bf16 (vn_gemm_bf16_ep's src16)
  float* C;
  int m, k, n, ta, tb, amx;
  struct vn_epilogue ep;
  int mc, npad, nc, mtiles, ntiles, kblocks;  // mc: rows of a row tile (vn_row_tile), <= MC
  // op(A) = A stored as bf16 with k even: a row's pairs of k are already the words the kernel
  // broadcasts, so gemm_task reads full strips in place (packing them would be a copy).
  int in_place;
  bf* bp;  // packed op(B): block kb at bp + kb * KC * npad, panel j at + j * NR * 2 * kc2
  bf* ap;  // NULL, or op(A) packed once for all column tiles: (MC tile, KC block) at APACK apart
};

// The bf16 elements of one packed (MC rows, KC block) of op(A), as pack_a writes it.
#define APACK ((size_t)MC * (KC + 2))

static inline int kc_of(const struct gemm* g, int kb) {
  int rest = g->k - kb * KC;
  return rest < KC ? rest : KC;
}

// Pairs of k per KC block as packed: kc rounded up to even, or (AMX) to a multiple of 32 (a tile).
static inline int kc2_of(const struct gemm* g, int kc) {
  return g->amx ? (kc + 31) / 32 * 16 : (kc + 1) / 2;
}

static inline bf to_bf(float x) { return (bf)vn_bf16_bits(x); }
// Element `at` of A or B (row-major offset) as bf16, from float32 or as stored.
static inline bf a_at(const struct gemm* g, size_t at) {
  return g->A16 ? g->A16[at] : to_bf(g->A[at]);
}
static inline bf b_at(const struct gemm* g, size_t at) {
  return g->B16 ? g->B16[at] : to_bf(g->B[at]);
}

// 16 pair words (x[2q] low, x[2q + 1] high) from 32 contiguous floats.
static inline __m512i pairs_contig(const float* x) {
  const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35,
                                       33, 31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  __m512i lo = vn_rne16(_mm512_loadu_ps(x)), hi = vn_rne16(_mm512_loadu_ps(x + 16));
  return _mm512_permutex2var_epi16(lo, odd, hi);
}
// 16 pair words (r0[q] low, r1[q] high) from two rows, the first `lanes` (mask) of them.
static inline __m512i pairs_rows(const float* r0, const float* r1, __mmask16 lanes) {
  __m512i lo = vn_rne16(_mm512_maskz_loadu_ps(lanes, r0));
  __m512i hi = vn_rne16(_mm512_maskz_loadu_ps(lanes, r1));
  return _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(lo, 16), hi);
}
// The same from two rows of 16 bf16.
static inline __m512i pairs_rows16(const uint16_t* r0, const uint16_t* r1) {
  __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)r0));
  __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)r1));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}
// 16 pair words of op(A) (ta = 0) from element `at` on: 32 floats rounded, or 32 bf16 as stored.
static inline __m512i pairs_a(const struct gemm* g, size_t at) {
  return g->A16 ? _mm512_loadu_si512(g->A16 + at) : pairs_contig(g->A + at);
}

// One task per (KC block, NR panel) of op(B): element (p, c) at [(p / 2) * 2 NR + 2 c + p % 2].
static void pack_b_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct gemm* g = ctx;
  int panels = g->npad / NR;
  int kb = t / panels, jp = t % panels;
  int k0 = kb * KC, kc = kc_of(g, kb), kc2 = kc2_of(g, kc), j0 = jp * NR;
  int w = g->n - j0 < NR ? g->n - j0 : NR;
  bf* dst = g->bp + (size_t)k0 * g->npad + (size_t)jp * NR * 2 * kc2;
  for (int p = kc; p < 2 * kc2; p++)
    for (int c = 0; c < NR; c++) dst[(size_t)(p / 2) * 2 * NR + 2 * c + p % 2] = 0;
  for (int c = w; c < NR; c++)
    for (int p = 0; p < kc; p++) dst[(size_t)(p / 2) * 2 * NR + 2 * c + p % 2] = 0;
  if (!g->tb && w == NR) {
    int p = 0;
    for (; p + 1 < kc; p += 2) {
      size_t at = (size_t)(k0 + p) * g->n + j0;
      uint32_t* d = (uint32_t*)(dst + (size_t)(p / 2) * 2 * NR);
      if (g->B16) {
        const uint16_t* src = g->B16 + at;
        _mm512_storeu_si512(d, pairs_rows16(src, src + g->n));
        _mm512_storeu_si512(d + 16, pairs_rows16(src + 16, src + g->n + 16));
      } else {
        const float* src = g->B + at;
        _mm512_storeu_si512(d, pairs_rows(src, src + g->n, 0xffff));
        _mm512_storeu_si512(d + 16, pairs_rows(src + 16, src + g->n + 16, 0xffff));
      }
    }
    if (p < kc) {
      size_t at = (size_t)(k0 + p) * g->n + j0;
      for (int c = 0; c < NR; c++) dst[(size_t)(p / 2) * 2 * NR + 2 * c] = b_at(g, at + c);
    }
  } else if (!g->tb) {
    for (int p = 0; p < kc; p++) {
      size_t at = (size_t)(k0 + p) * g->n + j0;
      bf* d = dst + (size_t)(p / 2) * 2 * NR + p % 2;
      for (int c = 0; c < w; c++) d[2 * c] = b_at(g, at + c);
    }
  } else {
    uint32_t* d = (uint32_t*)dst;  // pair p2 of column c at word p2 * NR + c
    // Sixteen columns at a time (op(B) = B^T: a column is a row of B, a weight's row), the full
    // blocks of 32 k: each rounded to 16 pair words, then transposed, so that a pair's 16
    // columns are one store rather than 16 words stored 128 bytes apart. The loop after it packs
    // the rest, column by column; the same words.
    int wide = w / 16 * 16, kfull = kc / 32 * 32;
    for (int c = 0; c < wide; c += 16) {
      const float* src = g->B + (size_t)(j0 + c) * g->k + k0;
      for (int p = 0; p < kfull; p += 32) {
        __m512i v[16];
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) v[q] = pairs_contig(src + (size_t)q * g->k + p);
        vn_transpose16(v);
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) _mm512_storeu_si512(d + (size_t)(p / 2 + q) * NR + c, v[q]);
      }
    }
    for (int c = 0; c < w; c++) {
      const float* src = g->B + (size_t)(j0 + c) * g->k + k0;
      int p = c < wide ? kfull : 0;  // the wide columns' full blocks are in place
      for (; p + 32 <= kc; p += 32) {
        uint32_t t[16];
        _mm512_storeu_si512(t, pairs_contig(src + p));
        for (int q = 0; q < 16; q++) d[(size_t)(p / 2 + q) * NR + c] = t[q];
      }
      for (; p < kc; p++) dst[(size_t)(p / 2) * 2 * NR + 2 * c + p % 2] = to_bf(src[p]);
    }
  }
}

// Rows i0 .. i0 + rows of op(A), columns k0 .. k0 + kc, into strips of MR (zero-padded):
// element (p, r) of a strip at [(p / 2) * 2 MR + 2 r + p % 2].
static void pack_a(const struct gemm* g, int i0, int rows, int k0, int kc, bf* restrict ap) {
  int kc2 = kc2_of(g, kc);
  // op(A) = A^T (the weight gradient's dy^T): rows of op(A) are columns of A. Each pair of A's
  // rows is read 48 columns at a time (three full loads per row) and split into four strips,
  // rather than 12 columns a strip (one pass over the rows per strip); the same words.
  _Static_assert(MR == 12, "four strips are three loads of 16");
  int wide = g->ta ? rows / (4 * MR) * (4 * MR) : 0;
  const size_t strip = (size_t)MR * kc2;  // a strip's words
  for (int p = 0; wide && p + 1 < kc; p += 2) {
    for (int s0 = 0; s0 < wide; s0 += 4 * MR) {
      const float* src = g->A + (size_t)(k0 + p) * g->m + i0 + s0;
      __m512i v0 = pairs_rows(src, src + g->m, 0xffff);
      __m512i v1 = pairs_rows(src + 16, src + g->m + 16, 0xffff);
      __m512i v2 = pairs_rows(src + 32, src + g->m + 32, 0xffff);
      uint32_t* o = (uint32_t*)(ap + (size_t)s0 * 2 * kc2) + (size_t)(p / 2) * MR;
      _mm512_mask_storeu_epi32(o, (1u << MR) - 1, v0);
      _mm512_mask_storeu_epi32(o + strip, (1u << MR) - 1, _mm512_alignr_epi32(v1, v0, 12));
      _mm512_mask_storeu_epi32(o + 2 * strip, (1u << MR) - 1, _mm512_alignr_epi32(v2, v1, 8));
      _mm512_mask_storeu_epi32(o + 3 * strip, (1u << MR) - 1, _mm512_alignr_epi32(v2, v2, 4));
    }
  }
  for (int s = 0; s < rows; s += MR) {
    int h = rows - s < MR ? rows - s : MR;
    bf* d = ap + (size_t)s * 2 * kc2;
    for (int p = kc; p < 2 * kc2; p++)
      for (int r = 0; r < MR; r++) d[(size_t)(p / 2) * 2 * MR + 2 * r + p % 2] = 0;
    for (int r = h; r < MR; r++)
      for (int p = 0; p < kc; p++) d[(size_t)(p / 2) * 2 * MR + 2 * r + p % 2] = 0;
    if (g->ta) {
      int p = s < wide ? kc / 2 * 2 : 0;  // the pairs of the wide strips are in place
      __mmask16 lanes = (__mmask16)((1u << h) - 1);
      for (; p + 1 < kc; p += 2) {
        const float* src = g->A + (size_t)(k0 + p) * g->m + i0 + s;
        __m512i v = pairs_rows(src, src + g->m, lanes);
        _mm512_mask_storeu_epi32(d + (size_t)p * MR, lanes, v);
      }
      for (; p < kc; p++) {
        const float* src = g->A + (size_t)(k0 + p) * g->m + i0 + s;
        bf* o = d + (size_t)(p / 2) * 2 * MR + p % 2;
        for (int r = 0; r < h; r++) o[2 * r] = to_bf(src[r]);
      }
    } else {
      uint32_t* dw = (uint32_t*)d;  // pair p2 of row r at word p2 * MR + r
      int p0 = 0;
      if (h == MR) {
        for (; p0 + 32 <= kc; p0 += 32) {
          __m512i v[16];
#pragma GCC unroll 16
          for (int r = 0; r < 16; r++)
            v[r] = r < MR ? pairs_a(g, (size_t)(i0 + s + r) * g->k + k0 + p0)
                          : _mm512_setzero_si512();
          vn_transpose16(v);
#pragma GCC unroll 16
          for (int q = 0; q < 16; q++)
            _mm512_mask_storeu_epi32(dw + (size_t)(p0 / 2 + q) * MR, (1u << MR) - 1, v[q]);
        }
      }
      for (int r = 0; r < h; r++) {
        size_t src = (size_t)(i0 + s + r) * g->k + k0;
        bf* o = d + 2 * r;
        int p = p0;
        for (; p + 32 <= kc; p += 32) {
          uint32_t t[16];
          _mm512_storeu_si512(t, pairs_a(g, src + p));
          for (int q = 0; q < 16; q++) dw[(size_t)(p / 2 + q) * MR + r] = t[q];
        }
        for (; p + 1 < kc; p += 2) {
          o[(size_t)p * MR] = a_at(g, src + p);
          o[(size_t)p * MR + 1] = a_at(g, src + p + 1);
        }
        if (p < kc) o[(size_t)p * MR] = a_at(g, src + p);
      }
    }
  }
}

// One task per (MC tile, KC block) of op(A): its strips into g->ap (see struct gemm).
static void pack_a_task(void* ctx, int t, int tid) {
  (void)tid;
  const struct gemm* g = ctx;
  int it = t / g->kblocks, kb = t % g->kblocks, i0 = it * g->mc;
  int rows = g->m - i0 < g->mc ? g->m - i0 : g->mc;
  pack_a(g, i0, rows, kb * KC, kc_of(g, kb), g->ap + (size_t)t * APACK);
}

// AMX (TDPBF16PS): strips of 16 rows of op(A), each row k-contiguous and zero-padded to 2 kc2
// (a tile's rows), rows past `rows` zero up to a multiple of 32.
static void pack_a_amx(const struct gemm* g, int i0, int rows, int k0, int kc, int kc2,
                       bf* restrict ap) {
  int padded = (rows + 31) / 32 * 32;
  for (int r = 0; r < padded; r++) {
    bf* d = ap + (size_t)r * 2 * kc2;
    int p = 0;
    if (r < rows && g->ta) {
      for (; p < kc; p++) d[p] = to_bf(g->A[(size_t)(k0 + p) * g->m + i0 + r]);
    } else if (r < rows && g->A16) {
      for (; p < kc; p++) d[p] = g->A16[(size_t)(i0 + r) * g->k + k0 + p];
    } else if (r < rows) {
      vn_to_bf16(g->A + (size_t)(i0 + r) * g->k + k0, d, kc);
      p = kc;
    }
    for (; p < 2 * kc2; p++) d[p] = 0;
  }
}

struct tilecfg {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Tiles 0-3: C (16 x 16 float32 each), 4-5: A (16 rows x 32 bf16), 6-7: B (16 pairs x 16 columns).
static void amx_config(void) {
  struct tilecfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int i = 0; i < 8; i++) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  _tile_loadconfig(&cfg);
}

// buf [32, 32] (row stride 32) = rows 0..32 of the strips a0, a1 @ the 32-column panel bp.
static void amx_kernel(int kc2, const bf* a0, const bf* a1, const bf* bp, float* buf) {
  const int64_t as = (int64_t)2 * kc2 * sizeof(bf), bs = 2 * NR * sizeof(bf);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int q = 0; q < kc2; q += 16) {
    _tile_loadd(4, a0 + 2 * q, as);
    _tile_loadd(5, a1 + 2 * q, as);
    _tile_loadd(6, bp + (size_t)q * 2 * NR, bs);
    _tile_loadd(7, bp + (size_t)q * 2 * NR + NR, bs);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, buf, 32 * sizeof(float));
  _tile_stored(1, buf + 16, 32 * sizeof(float));
  _tile_stored(2, buf + 16 * 32, 32 * sizeof(float));
  _tile_stored(3, buf + 16 * 32 + 16, 32 * sizeof(float));
}

// Thread scratch of gemm_task: the MR x NR tile buffer, then the packed A strips (bf16).
#define TASK_SCRATCH ((size_t)32 * 32 + (size_t)MC * (KC + 2) / 2)

static void gemm_task(void* ctx, int t, int tid) {
  const struct gemm* g = ctx;
  int it = t / g->ntiles, jt = t % g->ntiles;
  int i0 = it * g->mc, rows = g->m - i0 < g->mc ? g->m - i0 : g->mc;
  int j0 = jt * g->nc, cols = g->n - j0 < g->nc ? g->n - j0 : g->nc;
  float* tile = vn_thread_scratch(tid, TASK_SCRATCH);
  bf* ap = (bf*)(tile + 32 * 32);
  int sums = g->ep.rowsum && jt == 0;
  double acc[MC];
  if (sums)
    for (int r = 0; r < rows; r++) acc[r] = 0.0;
  if (g->amx) {
    amx_config();
    for (int kb = 0; kb < g->kblocks; kb++) {
      int k0 = kb * KC, kc = kc_of(g, kb), kc2 = kc2_of(g, kc), first = kb == 0;
      pack_a_amx(g, i0, rows, k0, kc, kc2, ap);
      if (sums) vn_rowsum_block(g->A, g->ta, g->m, g->k, i0, rows, k0, kc, acc);
      const bf* bblock = g->bp + (size_t)k0 * g->npad;
      for (int j = 0; j < cols; j += NR) {
        const bf* bpanel = bblock + (size_t)((j0 + j) / NR) * NR * 2 * kc2;
        int w = cols - j < NR ? cols - j : NR;
        for (int s = 0; s < rows; s += 32) {
          int h = rows - s < 32 ? rows - s : 32;
          float* c = g->C + (size_t)(i0 + s) * g->n + j0 + j;
          const bf* a0 = ap + (size_t)s * 2 * kc2;
          amx_kernel(kc2, a0, a0 + (size_t)16 * 2 * kc2, bpanel, tile);
          for (int r = 0; r < h; r++)
            for (int q = 0; q < w; q++)
              c[r * g->n + q] = first ? tile[r * 32 + q] : c[r * g->n + q] + tile[r * 32 + q];
        }
      }
    }
    _tile_release();
    vn_task_epilogue(&g->ep, g->C, g->n, i0, rows, j0, cols, sums ? acc : NULL);
    return;
  }
  struct vn_epilogue adds = vn_adds(&g->ep);
  const struct vn_epilogue* out = g->ep.bias || g->ep.res ? &adds : NULL;
  // In place (g->in_place): full strips; a last strip of fewer than MR rows is packed (zero
  // rows).
  int direct = g->in_place, full = rows / MR * MR;
  for (int kb = 0; kb < g->kblocks; kb++) {
    int k0 = kb * KC, kc = kc_of(g, kb), kc2 = kc2_of(g, kc), first = kb == 0;
    const struct vn_epilogue* last = kb == g->kblocks - 1 ? out : NULL;
    if (g->ap)
      ap = g->ap + ((size_t)it * g->kblocks + kb) * APACK;
    else if (!direct)
      pack_a(g, i0, rows, k0, kc, ap);
    else if (full < rows)
      pack_a(g, i0 + full, rows - full, k0, kc, ap + (size_t)full * 2 * kc2);
    if (sums) vn_rowsum_block(g->A, g->ta, g->m, g->k, i0, rows, k0, kc, acc);
    const bf* bblock = g->bp + (size_t)k0 * g->npad;
    for (int j = 0; j < cols; j += NR) {
      const bf* bpanel = bblock + (size_t)((j0 + j) / NR) * NR * 2 * kc2;
      int w = cols - j < NR ? cols - j : NR;
      for (int s = 0; s < rows; s += MR) {
        int h = rows - s < MR ? rows - s : MR;
        float* c = g->C + (size_t)(i0 + s) * g->n + j0 + j;
        const bf* astrip = ap + (size_t)s * 2 * kc2;
        if (direct && h == MR) {
          const bf* arow = g->A16 + (size_t)(i0 + s) * g->k + k0;
          if (w == NR)
            ukernel(kc2, arow, 2, g->k, bpanel, c, g->n, first, last, i0 + s, j0 + j);
          else
            ukernel(kc2, arow, 2, g->k, bpanel, tile, NR, 1, NULL, 0, 0);
        } else if (h == MR && w == NR) {
          ukernel(kc2, astrip, 2 * MR, 2, bpanel, c, g->n, first, last, i0 + s, j0 + j);
        } else {
          ukernel(kc2, astrip, 2 * MR, 2, bpanel, tile, NR, 1, NULL, 0, 0);
        }
        if (h < MR || w < NR) {
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

// The product: parallel on the pool (packed B in shared scratch) unless small, or, with
// stid >= 0, in thread stid alone (packed B in its scratch, after gemm_task's part).
static void gemm(const void* A, const void* B, float* C, int m, int k, int n, int ta, int tb,
                 int amx, int stid, const struct vn_epilogue* ep, int src16) {
  if (m <= 0) return;
  if (n <= 0 || k <= 0) {
    vn_gemm_degenerate(src16 & 1 ? NULL : A, ta, C, m, k, n, ep);
    return;
  }
  struct gemm g = {.C = C, .m = m, .k = k, .n = n, .ta = ta, .tb = tb, .amx = amx};
  if (src16 & 1)
    g.A16 = A;
  else
    g.A = A;
  if (src16 & 2)
    g.B16 = B;
  else
    g.B = B;
  if (ep) g.ep = *ep;
  g.in_place = g.A16 && !ta && k % 2 == 0;
  g.npad = (n + NR - 1) / NR * NR;
  g.kblocks = (k + KC - 1) / KC;
  size_t bfloats = ((size_t)(k + 32 * g.kblocks) * g.npad + 1) / 2;  // kc rounded up (kc2_of)
  int serial = stid >= 0 || (int64_t)m * n * k < (1 << 20), tid = stid < 0 ? 0 : stid;
  g.bp = stid >= 0 ? (bf*)(vn_thread_scratch(stid, TASK_SCRATCH + bfloats) + TASK_SCRATCH)
                   : (bf*)vn_shared_scratch(0, bfloats);
  int npack = g.kblocks * (g.npad / NR);
  if (serial)
    for (int t = 0; t < npack; t++) pack_b_task(&g, t, tid);
  else
    vn_parallel(npack, pack_b_task, &g);
  int threads = serial ? 1 : vn_nthreads(), panels = g.npad / NR, per = panels;
  g.mc = vn_row_tile(m, amx ? 32 : MR, MC, threads);  // AMX: whole tiles of 32 rows
  g.mtiles = (m + g.mc - 1) / g.mc;
  while (threads > 1 && per > 1 && g.mtiles * ((panels + per - 1) / per) < 4 * threads)
    per = (per + 1) / 2;
  g.nc = per * NR;
  g.ntiles = (panels + per - 1) / per;
  // Column tiles would each pack the same rows of op(A) (the weight gradient's dy^T, k = the
  // batch's rows): pack them once, in parallel, before the products; unless gemm_task reads
  // op(A) in place (stored as bf16, ta = 0, k even).
  if (g.ntiles > 1 && !serial && !amx && !g.in_place) {
    g.ap = (bf*)vn_shared_scratch(2, ((size_t)g.mtiles * g.kblocks * APACK + 1) / 2);
    vn_parallel(g.mtiles * g.kblocks, pack_a_task, &g);
  }
  if (serial)
    for (int t = 0; t < g.mtiles * g.ntiles; t++) gemm_task(&g, t, tid);
  else
    vn_parallel(g.mtiles * g.ntiles, gemm_task, &g);
}

// Batches of small products go one product per task (each single-threaded inside).
struct bmm_ctx {
  const float *A, *B;
  float* C;
  int m, k, n, ta, tb, amx;
  int64_t sa, sb;
};

static void bmm_task(void* ctx, int b, int tid) {
  const struct bmm_ctx* x = ctx;
  gemm(x->A + b * x->sa, x->B + b * x->sb, x->C + (size_t)b * x->m * x->n, x->m, x->k, x->n,
       x->ta, x->tb, x->amx, tid, NULL, 0);
}

void vn_bmm_bf16(const float* A, const float* B, float* C, int batch, int m, int k, int n, int ta,
                 int tb, int64_t sa, int64_t sb, int amx) {
  if (batch == 1 || (int64_t)m * n * k >= 64 * 64 * 64) {
    for (int b = 0; b < batch; b++)
      gemm(A + b * sa, B + b * sb, C + (size_t)b * m * n, m, k, n, ta, tb, amx, -1, NULL, 0);
    return;
  }
  struct bmm_ctx x = {A, B, C, m, k, n, ta, tb, amx, sa, sb};
  vn_parallel(batch, bmm_task, &x);
}

void vn_gemm_bf16_ep(const void* A, const void* B, float* C, int m, int k, int n, int ta, int tb,
                     int amx, const struct vn_epilogue* ep, int src16) {
  gemm(A, B, C, m, k, n, ta, tb, amx, -1, ep, src16);
}

double vn_peak_bf16(long iters, float a, float b, int amx, double* sum) {
  uint32_t pa = vn_bf16_bits(a) * 0x10001u, pb = vn_bf16_bits(b) * 0x10001u;
  double s = 0.0;
  if (amx) {
    // Four accumulator tiles (the GEMM's four) of 16 x 16 float32, tile j starting at j, each
    // += the same A (16 rows x 32 bf16) @ B (16 pairs x 16 columns) per step: 32 a b a lane.
    static _Thread_local float c[4][16 * 16];
    static _Thread_local uint32_t at[16 * 16], bt[16 * 16];
    for (int i = 0; i < 16 * 16; i++) {
      at[i] = pa;
      bt[i] = pb;
      for (int j = 0; j < 4; j++) c[j][i] = (float)j;
    }
    amx_config();
    _tile_loadd(0, c[0], 64);
    _tile_loadd(1, c[1], 64);
    _tile_loadd(2, c[2], 64);
    _tile_loadd(3, c[3], 64);
    _tile_loadd(4, at, 64);
    _tile_loadd(6, bt, 64);
    for (long i = 0; i < iters; i++) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 6);
      _tile_dpbf16ps(2, 4, 6);
      _tile_dpbf16ps(3, 4, 6);
    }
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    _tile_stored(2, c[2], 64);
    _tile_stored(3, c[3], 64);
    _tile_release();
    for (int j = 0; j < 4; j++)
      for (int i = 0; i < 16 * 16; i++) s += c[j][i];
    *sum = s;
    return 4.0 * 16 * 16 * 32 * 2 * (double)iters;
  }
  __m512 acc[2 * MR];
  __m512bh va = (__m512bh)_mm512_set1_epi32((int)pa), vb = (__m512bh)_mm512_set1_epi32((int)pb);
#pragma GCC unroll 24
  for (int j = 0; j < 2 * MR; j++) acc[j] = _mm512_set1_ps((float)j);
  for (long i = 0; i < iters; i++) {
#pragma GCC unroll 24
    for (int j = 0; j < 2 * MR; j++) acc[j] = _mm512_dpbf16_ps(acc[j], va, vb);
  }
  for (int j = 0; j < 2 * MR; j++) {
    float lanes[16];
    _mm512_storeu_ps(lanes, acc[j]);
    for (int l = 0; l < 16; l++) s += lanes[l];
  }
  *sum = s;
  return 4.0 * 2 * MR * 16 * (double)iters;
}
