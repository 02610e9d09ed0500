#!/usr/bin/env bash
# Builds lib/backends/wasm/kernels.wasm (for tfjs-backend-wasm's single-threaded build) and
# kernels_shared.wasm (for its threaded build, whose memory is shared) from kernels.c.
# Needs clang and wasm-ld (Debian: apt-get install -y clang-16 lld-16). The binaries are
# committed, so users and CI never run this; rerun it after editing kernels.c.
set -euo pipefail
cd "$(dirname "$0")"
CC=${CC:-$(command -v clang-16 || command -v clang)}
FLAGS=(--target=wasm32 -O3 -msimd128 -mbulk-memory -mnontrapping-fptoint -nostdlib -ffreestanding
  -fno-builtin -Wall -Wextra -Werror -Wl,--no-entry -Wl,--import-memory -Wl,--export-dynamic
  -Wl,--strip-all)
"$CC" "${FLAGS[@]}" -o kernels.wasm kernels.c
"$CC" "${FLAGS[@]}" -matomics -Wl,--shared-memory -Wl,--max-memory=4294967296 \
  -o kernels_shared.wasm kernels.c
# The module must not own any memory: no data segments and no use of the stack pointer.
for f in kernels.wasm kernels_shared.wasm; do
  dis=$(llvm-objdump-16 -d "$f" 2>/dev/null || true)
  if grep -q "global.set\|global.get" <<<"$dis"; then
    echo "build.sh: $f uses a global (stack pointer); rewrite the C so it keeps values in locals" >&2
    exit 1
  fi
  if llvm-objdump-16 -h "$f" | grep -q " DATA "; then
    echo "build.sh: $f has a data segment; kernels.c must not use static data" >&2
    exit 1
  fi
done
ls -l kernels.wasm kernels_shared.wasm
