#!/usr/bin/env bash
# One benchmark session, as in BENCHMARKS.md: the PyTorch reference and `deno task bench`
# back-to-back on the same machine, every workload on wasm (1 and 2 threads), cpu and webgpu,
# then the 200-step memory checks. Appends JSON lines to $OUT (default bench-session.jsonl);
# progress goes to $OUT.log. Long: the cpu and software-WebGPU backends take about an hour.
#
#   lib/bench/scripts/session.sh                 # everything
#   PARTS="ratio" lib/bench/scripts/session.sh   # only the PyTorch / wasm pairs (a few minutes)
#
# PARTS: any of native, ratio, slow, memory, profile (default all). PYTHON: the interpreter that
# has Debian's python3-torch (default /usr/bin/python3).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-bench-session.jsonl}
PARTS=${PARTS:-"native ratio slow memory profile"}
PYTHON=${PYTHON:-/usr/bin/python3}
LOG="$OUT.log"

# A failed run is logged and the session goes on.
torch() {
  "$PYTHON" tests/reference/moco_step_torch.py --threads 2 "$@" >>"$OUT" 2>>"$LOG" ||
    echo "FAILED: torch $*" | tee -a "$LOG"
}
# One core: OpenBLAS keeps its own threads (all cores) unless told.
torch1() {
  OPENBLAS_NUM_THREADS=1 "$PYTHON" tests/reference/moco_step_torch.py --threads 1 "$@" >>"$OUT" 2>>"$LOG" ||
    echo "FAILED: torch --threads 1 $*" | tee -a "$LOG"
}
bench() {
  deno run -A --unstable-webgpu lib/cli/bench.ts --json "$@" >>"$OUT" 2>>"$LOG" ||
    echo "FAILED: bench $*" | tee -a "$LOG"
}

has() { [[ " $PARTS " == *" $1 "* ]]; }

# 32-bit wasm has a 4 GiB heap per module, and a tfjs training step keeps every forward
# intermediate and every backward gradient alive until the gradient call returns. With one worker
# per core (the default) each worker has its own heap and half the batch, so tiny32 fits at its
# standard batch 64; in one module (--workers 1) it fits up to batch 32, and the vit_small224
# forward at batch 32. PyTorch runs the same batches.
if has native; then
  # The native backend (every core by default, and one thread) between PyTorch runs at 2 and 1
  # threads, each workload at its standard batch; then its profile and its memory check.
  for w in small28 tiny32; do
    torch --workload "$w"
    bench --workload "$w" --backend native
    bench --workload "$w" --backend native --threads 1
    torch1 --workload "$w"
    torch --workload "$w"
  done
  torch --workload vit_small224
  bench --workload vit_small224 --backend native --warmup 1 --steps 3
  bench --workload small28 --backend native --warmup 2 --steps 1 --aux-seconds 0 --profile
  bench --workload tiny32 --backend native --warmup 1 --steps 1 --aux-seconds 0 --profile
  bench --workload small28 --backend native --steps 200 --batch 16 --aux-seconds 0
fi

if has ratio; then
  # PyTorch and wasm back-to-back, PyTorch again at the end to bracket the load.
  torch --workload small28
  bench --workload small28 --backend wasm
  bench --workload small28 --backend wasm --workers 1 --threads 1
  bench --workload small28 --backend wasm --workers 1 --threads 2
  torch --workload small28
  torch --workload tiny32
  bench --workload tiny32 --backend wasm --warmup 1 --steps 3
  torch --workload tiny32 --batch 8
  bench --workload tiny32 --batch 8 --backend wasm --workers 1 --threads 1 --warmup 1
  bench --workload tiny32 --batch 8 --backend wasm --workers 1 --threads 2 --warmup 1
  torch --workload vit_small224
  bench --workload vit_small224 --backend wasm --warmup 1 --steps 3
  bench --workload vit_small224 --backend wasm --threads 2 --warmup 1 --steps 3
fi

if has slow; then
  # Pure-JS cpu and software WebGPU: 0.3-3 GFLOP/s, so one timed step each.
  bench --workload small28 --backend cpu --warmup 1 --steps 1
  bench --workload tiny32 --batch 16 --backend cpu --warmup 0 --steps 1
  bench --workload vit_small224 --batch 8 --backend cpu --warmup 0 --steps 1
  bench --workload small28 --backend webgpu --warmup 1 --steps 1
  bench --workload tiny32 --batch 16 --backend webgpu --warmup 1 --steps 1
  bench --workload vit_small224 --batch 8 --backend webgpu --warmup 1 --steps 1
fi

if has memory; then
  # tf.memory() must be flat over 200 steps (reduced batches: a leak shows at any batch), in the
  # main thread (--workers 1), where tf.memory() sees the step's tensors.
  bench --workload small28 --backend wasm --workers 1 --steps 200 --batch 16 --aux-seconds 0
  bench --workload tiny32 --backend wasm --workers 1 --steps 200 --batch 4 --aux-seconds 0
  bench --workload vit_small224 --backend wasm --steps 200 --batch 2 --aux-seconds 0
fi

if has profile; then
  bench --workload small28 --backend wasm --warmup 2 --steps 1 --aux-seconds 0 --profile
  bench --workload tiny32 --batch 8 --backend wasm --warmup 1 --steps 1 --aux-seconds 0 --profile
fi
