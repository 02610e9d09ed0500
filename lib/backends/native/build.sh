#!/usr/bin/env bash
# Builds libvitssl_native for Linux x86-64 from src/ with Debian's gcc (Debian 12: gcc 12.2):
#   bash lib/backends/native/build.sh            # writes libvitssl_native.linux-x86_64.so here
#   OUT=/tmp/lib.so bash lib/backends/native/build.sh   # elsewhere
#   bash lib/backends/native/build.sh --check    # rebuild in a temp dir; fail if the bytes differ
#                                                # from the committed library
# dense.c and ops.c are compiled once per instruction set (AVX-512, AVX2 + FMA, SSE2 baseline);
# api.c picks one at run time. bf16.c (the AVX512-BF16 and AMX GEMM) is compiled once, with -mavx512bf16,
# and runs only on CPUs that have it. x86-64 only: the sources build for other targets (the baseline
# uses 4-lane GCC vectors; api.c has an aarch64 pause), but this script passes x86 flags, and no
# arm64 library is built or committed (no cross compiler on the build machine). The flags make
# the bytes reproducible: no build id, source paths mapped, no timestamps (gcc writes none for a
# shared object), inputs in a fixed order; the same gcc gives the same bytes in any directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
committed="$here/libvitssl_native.linux-x86_64.so"
out="${OUT:-$committed}"
cc="${CC:-gcc}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
check=0
if [[ "${1:-}" == "--check" ]]; then
  check=1
  out="$tmp/fresh.so"
fi
common=(-O3 -std=gnu11 -fPIC -fvisibility=hidden -fno-math-errno -fno-trapping-math
  -fno-semantic-interposition -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
  "-ffile-prefix-map=$here=." -I"$here/src")
declare -A isa=(
  [avx512]="-mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mavx2 -DVN_AVX512"
  [avx2]="-mavx2 -mfma -DVN_AVX2"
  [base]=""
)
objs=()
cd "$here"
for name in avx512 avx2 base; do
  # shellcheck disable=SC2086
  "$cc" "${common[@]}" ${isa[$name]} -ffp-contract=fast -c src/dense.c -o "$tmp/dense_$name.o"
  # shellcheck disable=SC2086
  "$cc" "${common[@]}" ${isa[$name]} -ffp-contract=off -c src/ops.c -o "$tmp/ops_$name.o"
  objs+=("$tmp/dense_$name.o" "$tmp/ops_$name.o")
done
# shellcheck disable=SC2086
"$cc" "${common[@]}" ${isa[avx512]} -mavx512bf16 -mamx-tile -mamx-bf16 -ffp-contract=fast -c src/bf16.c -o "$tmp/bf16.o"
objs+=("$tmp/bf16.o")
"$cc" "${common[@]}" -ffp-contract=off -c src/api.c -o "$tmp/api.o"
# -z nodelete: the library stays mapped once loaded. Deno unloads a library when the last handle
# closes (a worker's, at its end: `deno test --parallel` runs each test file in one), but the
# pool's threads live on, asleep on a futex in the unmapped copy; a later dlopen maps a fresh copy,
# usually at the same address, whose futex wake then woke those threads too: two workers with one
# thread id, wrong sums and a corrupted heap ("double free or corruption").
"$cc" -shared -Wl,--build-id=none -Wl,-O1 -Wl,--hash-style=gnu -Wl,-z,nodelete -o "$tmp/lib.so" "$tmp/api.o" \
  "${objs[@]}" -lpthread -lm
strip --strip-unneeded "$tmp/lib.so"
mv "$tmp/lib.so" "$out"
if ((check)); then
  if cmp -s "$out" "$committed"; then
    echo "ok: $committed is what src/ builds to ($("$cc" --version | head -1))"
    exit 0
  fi
  echo "DIFFERENT: $committed is not what src/ builds to with $("$cc" --version | head -1):" \
    "rebuild it with bash lib/backends/native/build.sh (or, with another compiler, run" \
    "VITSSL_NATIVE_LIB=<fresh build> deno test -A tests/backends/native_kernels_test.ts)" >&2
  exit 1
fi
echo "built $out ($("$cc" --version | head -1))"
