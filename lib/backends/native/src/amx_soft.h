// Software stand-ins for the AMX intrinsics used by bf16.c, per thread, for amx_soft_check.sh: they
// check the AMX kernel's packing, tile strides and blocking on a CPU without AMX (each TDPBF16PS
// lane sums its pairs in float32 here; the hardware's order and rounding within a tile may differ,
// within the tests' tolerance). Never part of the committed library.
#include <stdint.h>
#include <string.h>
static __thread uint8_t soft_t[8][16][64];
static float soft_bf(uint16_t b) { uint32_t u = (uint32_t)b << 16; float f; memcpy(&f, &u, 4); return f; }
#define _tile_loadconfig(p) ((void)(p))
#define _tile_release() ((void)0)
#define _tile_zero(t) memset(soft_t[t], 0, sizeof soft_t[t])
#define _tile_loadd(t, base, stride) do { for (int r_ = 0; r_ < 16; r_++) memcpy(soft_t[t][r_], (const uint8_t*)(base) + (int64_t)r_ * (stride), 64); } while (0)
#define _tile_stored(t, base, stride) do { for (int r_ = 0; r_ < 16; r_++) memcpy((uint8_t*)(base) + (int64_t)r_ * (stride), soft_t[t][r_], 64); } while (0)
#define _tile_dpbf16ps(c, a, b) do { for (int m_ = 0; m_ < 16; m_++) for (int n_ = 0; n_ < 16; n_++) { float acc_; memcpy(&acc_, &soft_t[c][m_][4*n_], 4); for (int k_ = 0; k_ < 16; k_++) { uint16_t a0_, a1_, b0_, b1_; memcpy(&a0_, &soft_t[a][m_][4*k_], 2); memcpy(&a1_, &soft_t[a][m_][4*k_+2], 2); memcpy(&b0_, &soft_t[b][k_][4*n_], 2); memcpy(&b1_, &soft_t[b][k_][4*n_+2], 2); acc_ += soft_bf(a0_)*soft_bf(b0_) + soft_bf(a1_)*soft_bf(b1_);} memcpy(&soft_t[c][m_][4*n_], &acc_, 4);} } while (0)
