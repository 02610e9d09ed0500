#!/usr/bin/env bash
# Checks the AMX path of src/bf16.c on a CPU without AMX: builds a test copy of the library with
# the tile intrinsics replaced by src/amx_soft.h (software tiles) and the AMX CPU check and
# arch_prctl request forced on, then runs tests/backends/native_bf16_test.ts and
# native_linear_test.ts (the fused layers, bf16-stored operands) on it with VITSSL_NATIVE_AMX=1
# (the bf16-amx path then runs beside the others). Needs gcc and Deno:
#   bash lib/backends/native/amx_soft_check.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$here/src/vn.h" "$here/src/amx_soft.h" "$tmp/"
sed 's|#include <immintrin.h>|#include <immintrin.h>\n#include "amx_soft.h"|' "$here/src/bf16.c" >"$tmp/bf16.c"
sed -e 's/__builtin_cpu_supports("amx-tile") &&/1 \&\&/' \
  -e 's/__builtin_cpu_supports("amx-bf16") && syscall(SYS_arch_prctl, 0x1023, 18) == 0/1/' \
  "$here/src/api.c" >"$tmp/api.c"
grep -q '&& 1 &&' "$tmp/api.c" || { echo "amx_soft_check: api.c's AMX check changed; update this script" >&2; exit 1; }
avx512="-mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mavx2 -DVN_AVX512"
c="gcc -O2 -std=gnu11 -fPIC -w -I$tmp"
# shellcheck disable=SC2086
$c $avx512 -mavx512bf16 -c "$tmp/bf16.c" -o "$tmp/bf16.o"
$c -c "$tmp/api.c" -o "$tmp/api.o"
for n in avx512 avx2 base; do
  case $n in avx512) fl="$avx512" ;; avx2) fl="-mavx2 -mfma -DVN_AVX2" ;; base) fl="" ;; esac
  # shellcheck disable=SC2086
  $c $fl -c "$here/src/dense.c" -o "$tmp/dense_$n.o" && $c $fl -c "$here/src/ops.c" -o "$tmp/ops_$n.o"
done
gcc -shared -o "$tmp/lib.so" "$tmp"/*.o -lpthread -lm
cd "$here/../../.."
VITSSL_NATIVE_LIB="$tmp/lib.so" VITSSL_NATIVE_AMX=1 npx --yes deno@2.9.6 test -A tests/backends/native_bf16_test.ts \
  tests/backends/native_linear_test.ts
