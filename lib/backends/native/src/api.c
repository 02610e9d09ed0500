// libvitssl_native: the exported C API that lib/backends/native/ffi.ts calls through Deno's FFI,
// the thread pool, and the choice of instruction set.
//
// Every exported kernel takes the API lock (so calls from several Deno workers in one process
// run one at a time), then runs the chosen instruction set's implementation, which splits its
// work with vn_parallel. The pool has vn_set_threads(n) - 1 worker threads plus the caller; idle
// workers spin briefly, then sleep on a futex.
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "vn.h"

#define EXPORT __attribute__((visibility("default")))
#define VN_VERSION 10
#define MAXT 64

extern const struct vn_impl vn_dense_avx512, vn_ops_avx512, vn_dense_avx2, vn_ops_avx2,
    vn_dense_base, vn_ops_base;

static pthread_mutex_t api_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct vn_impl impls[3];  // 0 base (SSE2), 1 AVX2 + FMA, 2 AVX-512
static int isa_supported, isa;
// GEMM precision (vn_set_precision): 0 float32; bf16 on path 1 (emulated: dense.c with rnd = 1),
// 2 (AVX512-BF16: bf16.c) or 3 (AMX-BF16 tiles: bf16.c, opt-in, see init). bf16_supported is the
// best bf16 path of this CPU.
static int precision, bf16_supported;

// ---------------------------------------------------------------------------------------------
// Thread pool.
// ---------------------------------------------------------------------------------------------
static int nthreads = 1;
// Pause loops an idle worker spins before it sleeps (VITSSL_NATIVE_SPIN; default 2000, tens of
// microseconds: enough to catch the next kernel of a training step on an idle machine, short
// enough that a worker on a busy machine sleeps instead of burning the time slice it needs).
static int spins_before_sleep = 2000;
static pthread_t workers[MAXT];
static _Atomic unsigned gen;
static _Atomic int sleepers, pending, next_task, quit;
static unsigned start_gen;  // gen when the workers were started (no job runs meanwhile)
static int job_ntasks;
static vn_task job_fn;
static void* job_ctx;

static void futex_wait(_Atomic unsigned* addr, unsigned val) {
  syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}
static void futex_wake(_Atomic unsigned* addr) {
  syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

static void run_tasks(int tid) {
  int t;
  while ((t = atomic_fetch_add_explicit(&next_task, 1, memory_order_relaxed)) < job_ntasks)
    job_fn(job_ctx, t, tid);
}

static void* worker_main(void* arg) {
  int tid = (int)(intptr_t)arg;
  unsigned seen = start_gen;
  for (;;) {
    unsigned g;
    int spins = 0;
    while ((g = atomic_load_explicit(&gen, memory_order_acquire)) == seen) {
      if (++spins < spins_before_sleep) {
        cpu_relax();
      } else {
        atomic_fetch_add(&sleepers, 1);
        futex_wait(&gen, seen);
        atomic_fetch_sub(&sleepers, 1);
        spins = 0;
      }
    }
    seen = g;
    if (atomic_load(&quit)) return NULL;
    run_tasks(tid);
    atomic_fetch_sub_explicit(&pending, 1, memory_order_release);
  }
}

void vn_parallel(int ntasks, vn_task fn, void* ctx) {
  if (ntasks <= 0) return;
  if (nthreads == 1 || ntasks == 1) {
    for (int t = 0; t < ntasks; t++) fn(ctx, t, 0);
    return;
  }
  job_ntasks = ntasks;
  job_fn = fn;
  job_ctx = ctx;
  atomic_store(&next_task, 0);
  atomic_store(&pending, nthreads - 1);
  atomic_fetch_add(&gen, 1);
  if (atomic_load(&sleepers) > 0) futex_wake(&gen);
  run_tasks(0);
  // A worker may be descheduled mid-task on a busy machine: spin a little, then yield the core.
  for (int spins = 0; atomic_load_explicit(&pending, memory_order_acquire) > 0; spins++) {
    if (spins < 2000) cpu_relax();
    else sched_yield();
  }
}

int vn_nthreads(void) { return nthreads; }

static void stop_workers(void) {
  if (nthreads <= 1) return;
  atomic_store(&quit, 1);
  atomic_fetch_add(&gen, 1);
  futex_wake(&gen);
  for (int i = 1; i < nthreads; i++) pthread_join(workers[i], NULL);
  atomic_store(&quit, 0);
  nthreads = 1;
}

// ---------------------------------------------------------------------------------------------
// Scratch memory.
// ---------------------------------------------------------------------------------------------
static float* thread_buf[MAXT];
static size_t thread_cap[MAXT];
static float* shared_buf[4];
static size_t shared_cap[4];

static float* grow(float** buf, size_t* cap, size_t n) {
  if (n > *cap) {
    free(*buf);
    size_t want = n + n / 4 + 1024;
    void* p = NULL;
    if (posix_memalign(&p, 64, want * sizeof(float))) abort();
    *buf = p;
    *cap = want;
  }
  return *buf;
}

float* vn_thread_scratch(int tid, size_t n) { return grow(&thread_buf[tid], &thread_cap[tid], n); }
float* vn_shared_scratch(int slot, size_t n) { return grow(&shared_buf[slot], &shared_cap[slot], n); }

// ---------------------------------------------------------------------------------------------
// Instruction sets: the best one the CPU (and OS) supports, unless VITSSL_NATIVE_ISA
// (base|avx2|avx512) asks for a lower one.
// ---------------------------------------------------------------------------------------------
static void init(void) {
  const struct vn_impl* dense[3] = {&vn_dense_base, &vn_dense_avx2, &vn_dense_avx512};
  const struct vn_impl* ops[3] = {&vn_ops_base, &vn_ops_avx2, &vn_ops_avx512};
  for (int i = 0; i < 3; i++) {
    impls[i] = *ops[i];
    impls[i].bmm = dense[i]->bmm;
    impls[i].gemm_ep = dense[i]->gemm_ep;
    impls[i].attention = dense[i]->attention;
    impls[i].attention_grad = dense[i]->attention_grad;
    impls[i].peak = dense[i]->peak;
  }
  isa_supported = 0;
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa_supported = 1;
  if (isa_supported == 1 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    isa_supported = 2;
#endif
  isa = isa_supported;
  const char* spin = getenv("VITSSL_NATIVE_SPIN");
  if (spin) spins_before_sleep = atoi(spin) < 0 ? 0 : atoi(spin);
  const char* want = getenv("VITSSL_NATIVE_ISA");
  if (want) {
    int w = !strcmp(want, "base") ? 0 : !strcmp(want, "avx2") ? 1 : !strcmp(want, "avx512") ? 2 : -1;
    if (w >= 0 && w < isa) isa = w;
  }
  // bf16 paths: AVX512-BF16 only where AVX-512 is in use (VITSSL_NATIVE_ISA=avx2 or base gives
  // the emulated path, which is how a CPU without the instructions runs).
  bf16_supported = 1;
#if defined(__x86_64__)
  if (isa == 2 && __builtin_cpu_supports("avx512bf16")) bf16_supported = 2;
  // AMX: untested on hardware so far, so only with VITSSL_NATIVE_AMX=1; Linux must grant the
  // tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 18) first.
  const char* amx = getenv("VITSSL_NATIVE_AMX");
  if (bf16_supported == 2 && amx && !strcmp(amx, "1") && __builtin_cpu_supports("amx-tile") &&
      __builtin_cpu_supports("amx-bf16") && syscall(SYS_arch_prctl, 0x1023, 18) == 0)
    bf16_supported = 3;
#endif
}

static inline const struct vn_impl* lock(void) {
  pthread_once(&once, init);
  pthread_mutex_lock(&api_lock);
  return &impls[isa];
}
static inline void unlock(void) { pthread_mutex_unlock(&api_lock); }

/** The API version (ffi.ts refuses a library of another version). */
EXPORT int vn_version(void) { return VN_VERSION; }

/** The best instruction set this CPU supports: 0 base (SSE2), 1 AVX2 + FMA, 2 AVX-512. */
EXPORT int vn_isa_supported(void) {
  pthread_once(&once, init);
  return isa_supported;
}

/** The instruction set in use. */
EXPORT int vn_isa(void) {
  pthread_once(&once, init);
  return isa;
}

/** Uses instruction set `level` (see vn_isa_supported); returns it, or -1 if unsupported. */
EXPORT int vn_set_isa(int level) {
  lock();
  int r = -1;
  if (level >= 0 && level <= isa_supported) isa = r = level;
  unlock();
  return r;
}

/**
 * The best bf16 GEMM path of this CPU: 1 emulated (float32 math on bf16-rounded inputs, any CPU),
 * 2 AVX512-BF16 (VDPBF16PS), 3 AMX-BF16 tiles (TDPBF16PS; only with VITSSL_NATIVE_AMX=1, as the
 * kernel is untested on hardware).
 */
EXPORT int vn_bf16_supported(void) {
  pthread_once(&once, init);
  return bf16_supported;
}

/**
 * The precision of every matrix product (vn_bmm) from now on, process-wide: 0 float32; bf16 (both
 * operands rounded to bf16, round to nearest even; float32 accumulation) on path 1 (emulated),
 * 2 (AVX512-BF16) or 3 (AMX); -1 for the best bf16 path of this CPU. Returns the mode in use, or
 * -1 (nothing changed) for an unknown mode or a path this CPU lacks. Attention (vn_attention and
 * its gradient) stays float32.
 */
EXPORT int vn_set_precision(int mode) {
  lock();
  int r = -1;
  if (mode == -1) mode = bf16_supported;
  if (mode >= 0 && mode <= bf16_supported) precision = r = mode;
  unlock();
  return r;
}

/** The GEMM precision in use (see vn_set_precision). */
EXPORT int vn_precision(void) { return precision; }

// One thread's peak loop for GEMM mode `mode` (as vn_set_precision's): the float32 FMAs of the
// instruction set in use (also what the emulated bf16 path multiplies with), VDPBF16PS, or AMX.
static double peak_steps(const struct vn_impl* impl, int mode, long iters, float a, float b,
                         double* sum) {
  if (mode >= 2) return vn_peak_bf16(iters, a, b, mode == 3, sum);
  return impl->peak(iters, a, b, sum);
}

/**
 * The peak loop's exact work, for a test: iters steps on the calling thread from accumulators
 * j = 0, 1, ... (out[0]: the FLOPs counted, out[1]: every lane's final value summed; in fp32
 * each step is acc = acc * a + b, in bf16 acc += 2 a b per lane, 32 a b on AMX). Returns 0, or
 * -1 for a mode this CPU lacks.
 */
EXPORT int vn_peak_check(int mode, int64_t iters, float a, float b, double* out) {
  const struct vn_impl* impl = lock();
  int ok = mode >= 0 && mode <= bf16_supported;
  if (ok) out[0] = peak_steps(impl, mode, (long)iters, a, b, &out[1]);
  unlock();
  return ok ? 0 : -1;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

struct peak_job {
  const struct vn_impl* impl;
  int mode;
  double seconds, rate[MAXT];
};

static void peak_task(void* ctx, int t, int tid) {
  struct peak_job* j = ctx;
  double flops = 0.0, sum, t0 = now_s(), dt;
  do flops += peak_steps(j->impl, j->mode, 1L << 14, 1.0f, 0.5f, &sum);
  while ((dt = now_s() - t0) < j->seconds);
  j->rate[t] = flops / dt;
}

/**
 * The CPU's measured peak for GEMM mode `mode` (as vn_set_precision's; the emulated bf16 path
 * multiplies in float32, so its peak is float32's), in GFLOP/s of every pool thread at once: each
 * runs independent multiply-adds on registers (as many accumulators as the micro-kernel keeps)
 * for `seconds`, and the threads' rates are summed. -1 for a mode this CPU lacks.
 */
EXPORT double vn_peak_gflops(int mode, double seconds) {
  const struct vn_impl* impl = lock();
  double total = -1.0;
  if (mode >= 0 && mode <= bf16_supported) {
    struct peak_job j = {impl, mode, seconds, {0}};
    vn_parallel(nthreads, peak_task, &j);
    total = 0.0;
    for (int t = 0; t < nthreads; t++) total += j.rate[t];
    total *= 1e-9;
  }
  unlock();
  return total;
}

/** Runs kernels on n threads (1 .. 64; the caller is one of them); returns the count. */
EXPORT int vn_set_threads(int n) {
  lock();
  n = n < 1 ? 1 : n > MAXT ? MAXT : n;
  if (n != nthreads) {
    stop_workers();
    start_gen = atomic_load(&gen);
    int started = 1;
    for (int i = 1; i < n; i++) {
      if (pthread_create(&workers[i], NULL, worker_main, (void*)(intptr_t)i)) break;
      started++;
    }
    nthreads = started;
  }
  n = nthreads;
  unlock();
  return n;
}

EXPORT int vn_threads(void) { return nthreads; }

/** Online processors (sysconf), the default thread count. */
EXPORT int vn_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : (int)n;
}

#define CALL(expr)                     \
  do {                                 \
    const struct vn_impl* impl_ = lock(); \
    impl_->expr;                       \
    unlock();                          \
  } while (0)

/** C[b] = op(A[b]) @ op(B[b]), b < batch; A[b] at A + b * sa, B[b] at B + b * sb (0: shared). */
EXPORT void vn_bmm(const float* A, const float* B, float* C, int batch, int m, int k, int n,
                   int ta, int tb, int64_t sa, int64_t sb) {
  const struct vn_impl* impl = lock();
  if (precision >= 2)
    vn_bmm_bf16(A, B, C, batch, m, k, n, ta, tb, sa, sb, precision == 3);
  else
    impl->bmm(A, B, C, batch, m, k, n, ta, tb, sa, sb, precision == 1);
  unlock();
}

// n bf16 (uint16_t) widened to float32 (exact) in shared scratch `slot`.
static const float* widen(const void* src, size_t n, int slot) {
  const uint16_t* s = src;
  uint32_t* d = (uint32_t*)vn_shared_scratch(slot, n);
  for (size_t i = 0; i < n; i++) d[i] = (uint32_t)s[i] << 16;
  return (const float*)d;
}

// One product with its epilogue, in the precision of vn_bmm; lock held. src16 as
// vn_gemm_bf16_ep's (A, B stored as bf16): read as stored on the bf16 paths, widened to float32
// (exact) first on the others.
static void gemm_ep(const struct vn_impl* impl, const void* A, const void* B, float* C, int m,
                    int k, int n, int ta, int tb, const struct vn_epilogue* ep, int src16) {
  if (precision >= 2) {
    vn_gemm_bf16_ep(A, B, C, m, k, n, ta, tb, precision == 3, ep, src16);
    return;
  }
  if (src16 & 1) A = widen(A, (size_t)m * k, 1);
  if (src16 & 2) B = widen(B, (size_t)k * n, 3);
  impl->gemm_ep(A, B, C, m, k, n, ta, tb, precision == 1, ep);
}

/**
 * A linear layer's forward: y[m, n] = res[m, n] + (x[m, k] @ w[n, k]^T + b[n]) (b, res NULL:
 * none), the bias and the residual added in the product's output pass; in the precision of
 * vn_bmm. Bit-identical to vn_bmm followed by float32 adds of b, then of res. x16 = 1: x is
 * stored as bf16 (uint16_t, as vn_linear_gelu's y16 writes it).
 */
EXPORT void vn_linear(const void* x, const float* w, const float* b, const float* res, float* y,
                      int m, int k, int n, int x16) {
  const struct vn_impl* impl = lock();
  struct vn_epilogue ep = {b, res, NULL, NULL, NULL};
  gemm_ep(impl, x, w, y, m, k, n, 0, 1, &ep, x16 ? 1 : 0);
  unlock();
}

/**
 * fc1 and its GELU: h[m, n] = x @ w^T + b (b NULL: none) and y = gelu(h), GELU applied to each
 * row of h in the product's output pass. Bit-identical to vn_linear, then vn_gelu of h. y16 = 1:
 * y is stored as bf16 (uint16_t [m, n], vn_bf16_bits of each value): in the bf16 precisions,
 * exactly what the next product reads of y (it rounds its operands so), in half the bytes. x16
 * = 1: x is stored as bf16, as in vn_linear.
 */
EXPORT void vn_linear_gelu(const void* x, const float* w, const float* b, float* h, void* y,
                           int m, int k, int n, int x16, int y16) {
  const struct vn_impl* impl = lock();
  struct vn_epilogue ep = {b, NULL, NULL, impl->gelu_rows, y16 ? NULL : y};
  ep.act_out16 = y16 ? y : NULL;
  gemm_ep(impl, x, w, h, m, k, n, 0, 1, &ep, x16 ? 1 : 0);
  unlock();
}

/**
 * Its backward from dy[m, n]: dx[m, k] = dy @ w, dw[n, k] = dy^T @ x and db[n] = the column sums
 * of dy (NULL: not wanted), summed in dw's product as it packs dy (vn.h). Each equals the
 * separate kernel's result: vn_bmm for dx and dw, the Sum kernel (ops.c, sum_cols) for db.
 * With pre[m, k] (fc2 after a GELU: x = gelu(pre); NULL: none), dx = (dy @ w) * gelu'(pre), the
 * gradient at pre, GELU's gradient applied to each row of the product in its output pass:
 * bit-identical to the product, then vn_gelu_grad at pre. x16 = 1: x is stored as bf16 (as in
 * vn_linear).
 */
EXPORT void vn_linear_grad(const float* dy, const void* x, const float* w, const float* pre,
                           float* dx, float* dw, float* db, int m, int k, int n, int x16) {
  const struct vn_impl* impl = lock();
  struct vn_epilogue dact = {NULL, NULL, NULL, NULL, NULL, impl->gelu_grad_rows, pre};
  gemm_ep(impl, dy, w, dx, m, n, k, 0, 0, pre ? &dact : NULL, 0);
  struct vn_epilogue ep = {NULL, NULL, db, NULL, NULL, NULL, NULL};
  gemm_ep(impl, dy, x, dw, n, m, k, 1, 0, &ep, x16 ? 2 : 0);
  unlock();
}

/**
 * out [B*T, D], probs [B, H, T, T] of multi-head self-attention from qkv [B*T, 3D]. out16 = 1:
 * out is stored as bf16 (uint16_t, vn_bf16_bits of each value), for vn_linear's x16.
 */
EXPORT void vn_attention(const float* qkv, void* out, float* probs, int B, int T, int H, int hd,
                         float scale, int out16) {
  CALL(attention(qkv, out16 ? NULL : out, out16 ? out : NULL, probs, B, T, H, hd, scale));
}

/**
 * dqkv [B*T, 3D] from dout [B*T, D], dprobs and probs [B, H, T, T] and qkv; dprobs NULL for a
 * zero gradient of probs (no consumer read them).
 */
EXPORT void vn_attention_grad(const float* dout, const float* dprobs, const float* qkv,
                              const float* probs, float* dqkv, int B, int T, int H, int hd,
                              float scale) {
  CALL(attention_grad(dout, dprobs, qkv, probs, dqkv, B, T, H, hd, scale));
}

/** out = a op b with broadcasting; meta = shape[4], a strides[4], b strides[4]. */
EXPORT void vn_binary(int op, const float* a, const float* b, float* out, const int32_t* meta) {
  CALL(binary(op, a, b, out, meta));
}

/** y = op(x) elementwise (see ops.c for the ops). */
EXPORT void vn_unary(int op, const float* x, float* y, int n, float alpha) {
  CALL(unary(op, x, y, n, alpha));
}

/** out[r] = sum_c x[r, c] / div (a double accumulator). */
EXPORT void vn_sum_rows(const float* x, float* out, int rows, int cols, float div) {
  CALL(sum_rows(x, out, rows, cols, div));
}

/** out[c] = sum_r x[r, c] / div (a double accumulator). */
EXPORT void vn_sum_cols(const float* x, float* out, int rows, int cols, float div) {
  CALL(sum_cols(x, out, rows, cols, div));
}

/** out[c] = x[0, c] + x[1, c] + ... in float32, rows in order from +0 (tfjs's Tile gradient). */
EXPORT void vn_sum_cols_f32(const float* x, float* out, int rows, int cols) {
  CALL(sum_cols_f32(x, out, rows, cols));
}

/** [batch, rows, cols, inner] to [batch, cols, rows, inner] (any 4-byte elements). */
EXPORT void vn_transpose(const float* src, float* dst, int batch, int rows, int cols, int inner) {
  CALL(transpose(src, dst, batch, rows, cols, inner));
}

/** Any permutation of up to 8 axes: meta = out shape[rank], source strides per out axis. */
EXPORT void vn_transpose_nd(const float* src, float* dst, int rank, const int32_t* meta) {
  CALL(transpose_nd(src, dst, rank, meta));
}

/** For r < rows: len elements from src + so + r * ss to dst + do + r * ds (4-byte elements). */
EXPORT void vn_copy_rows(const float* src, int so, float* dst, int dof, int rows, int len, int ss,
                         int ds) {
  CALL(copy_rows(src + so, dst + dof, rows, len, ss, ds));
}

/** y = clip(x, lo, hi) (NaN kept). */
EXPORT void vn_clip(const float* x, float* y, int n, float lo, float hi) {
  CALL(clip(x, y, n, lo, hi));
}

/** out[i..] = src[sum_a idx_a[i_a]]: per-axis source offsets (see ops.c). */
EXPORT void vn_gather_idx(const float* src, float* dst, int rank, const int32_t* meta,
                          const int32_t* idx) {
  CALL(gather_idx(src, dst, rank, meta, idx));
}

/** Depthwise 2D convolution, NHWC (meta: see ops.c). */
EXPORT void vn_dwconv(const float* x, const float* f, float* y, const int32_t* meta) {
  CALL(dwconv(x, f, y, meta));
}

/** Bilinear crop-and-resize of NHWC images (meta: see ops.c). */
EXPORT void vn_crop_and_resize(const float* img, const float* boxes, const int32_t* ind,
                               float* out, const int32_t* meta, float extrapolation) {
  CALL(crop_and_resize(img, boxes, ind, out, meta, extrapolation));
}

/**
 * vals, idx [rows, k]: the k largest of each row of x [rows, n], by value descending, equal values
 * by ascending index (tfjs's TopK, sorted). Returns 1 (outputs unspecified) if x has a NaN or an
 * infinity, else 0.
 */
EXPORT int vn_topk(const float* x, float* vals, int32_t* idx, int rows, int n, int k) {
  const struct vn_impl* impl = lock();
  int r = impl->topk(x, vals, idx, rows, n, k);
  unlock();
  return r;
}

/**
 * LayerNorm of x [rows, d] over its last axis: y = (x - mean) / sqrt(var + eps) * g + b. y16 =
 * 1: y is stored as bf16 (uint16_t, vn_bf16_bits of each value), what a bf16 product reads of it
 * (vn_linear's x16).
 */
EXPORT void vn_layernorm(const float* x, const float* g, const float* b, void* y, int rows, int d,
                         float eps, int y16) {
  CALL(layernorm(x, g, b, y16 ? NULL : y, y16 ? y : NULL, rows, d, eps));
}

/**
 * LayerNorm's gradient at x [rows, d] from dy: dx, dg, db [d]; with dres (NULL: none) dx =
 * dres + the LayerNorm gradient, a residual's gradient added in the same pass (the float32 add
 * of a separate Add kernel).
 */
EXPORT void vn_layernorm_grad(const float* dy, const float* x, const float* g, const float* dres,
                              float* dx, float* dg, float* db, int rows, int d, float eps) {
  CALL(layernorm_grad(dy, x, g, dres, dx, dg, db, rows, d, eps));
}

/**
 * BatchNorm of x [rows, d] over its rows (training mode): y, and the batch's mean and biased var
 * [d]; g, b NULL for none (see ops.c).
 */
EXPORT void vn_batchnorm(const float* x, const float* g, const float* b, float* y, float* mean,
                         float* var, int rows, int d, float eps) {
  CALL(batchnorm(x, g, b, y, mean, var, rows, d, eps));
}

/** Its gradient: dx, and dg, db (NULL: not wanted); dmean, dvar NULL for zero. */
EXPORT void vn_batchnorm_grad(const float* dy, const float* x, const float* g, const float* mean,
                              const float* var, const float* dmean, const float* dvar, float* dx,
                              float* dg, float* db, int rows, int d, float eps) {
  CALL(batchnorm_grad(dy, x, g, mean, var, dmean, dvar, dx, dg, db, rows, d, eps));
}

EXPORT void vn_gelu(const float* x, float* y, int n) { CALL(gelu(x, y, n)); }

EXPORT void vn_gelu_grad(const float* dy, const float* x, float* dx, int n) {
  CALL(gelu_grad(dy, x, dx, n));
}

EXPORT void vn_adamw(const float* p, const float* g, const float* m, const float* v, float* p1,
                     float* m1, float* v1, int n, float c1m, float b2, float c2, float sbc2,
                     float eps, float decay, float step, int has_decay) {
  CALL(adamw(p, g, m, v, p1, m1, v1, n, c1m, b2, c2, sbc2, eps, decay, step, has_decay));
}

EXPORT void vn_ema(const float* t, const float* s, float* t1, int n, float mom, float one_minus) {
  CALL(ema(t, s, t1, n, mom, one_minus));
}

/**
 * vn_adamw on count tensors at once, in place: ptrs holds p, g, m, v of each (n[i] floats;
 * p, m, v overwritten, none overlapping another), has_decay[i] whether tensor i decays. The
 * same bits as vn_adamw per tensor, in one pool job.
 */
EXPORT void vn_adamw_many(int count, void* const* ptrs, const int32_t* n, const int32_t* has_decay,
                          float c1m, float b2, float c2, float sbc2, float eps, float decay,
                          float step) {
  CALL(adamw_many(count, ptrs, n, has_decay, c1m, b2, c2, sbc2, eps, decay, step));
}

/** vn_ema on count tensors at once, in place: ptrs holds t, s of each (t overwritten). */
EXPORT void vn_ema_many(int count, void* const* ptrs, const int32_t* n, float mom,
                        float one_minus) {
  CALL(ema_many(count, ptrs, n, mom, one_minus));
}
