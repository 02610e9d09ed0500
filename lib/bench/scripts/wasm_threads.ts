/**
 * Benchmark: tfjs wasm, single-threaded SIMD build vs the threaded SIMD build (see
 * {@link ../../backends/wasm/threads.ts}), on matmul shapes of a small ViT. Configurations alternate in rounds
 * so that load from other processes hits them alike; each op reports its best round.
 *
 * Run: `deno run -A lib/bench/scripts/wasm_threads.ts [--rounds 5] [--threads 1,2] [--fast]`
 * (`1` = tfjs's own single-threaded build, `n > 1` = the threaded build with n threads;
 * `--fast` installs {@link ../../backends/wasm/matmul.ts}'s XNNPACK routing first.)
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import process from "node:process";
import { initBackend } from "../../backends/mod.ts";
import { installWasmMatMulFastPath } from "../../backends/wasm/matmul.ts";
import { type FlagSpec, parseFlags } from "../../core/flags.ts";

interface Op {
  name: string;
  /** Input shapes. */
  shapes: number[][];
  /** The op on the inputs. */
  f: (xs: tf.Tensor[]) => tf.Tensor;
  flops: number;
  reps: number;
}

const OPS: Op[] = [
  {
    name: "matmul [2048,512]@[512,512]",
    shapes: [[2048, 512], [512, 512]],
    f: ([a, b]) => tf.matMul(a, b),
    flops: 2 * 2048 * 512 * 512,
    reps: 10,
  },
  {
    name: "matmul [512,512]@[512,512]",
    shapes: [[512, 512], [512, 512]],
    f: ([a, b]) => tf.matMul(a, b),
    flops: 2 * 512 ** 3,
    reps: 20,
  },
  {
    name: "matmul [512,512]@[512,512]^T",
    shapes: [[512, 512], [512, 512]],
    f: ([a, b]) => tf.matMul(a, b, false, true),
    flops: 2 * 512 ** 3,
    reps: 3,
  },
  {
    name: "bmm [64,17,128]@[64,128,17]",
    shapes: [[64, 17, 128], [64, 128, 17]],
    f: ([a, b]) => tf.matMul(a, b),
    flops: 2 * 64 * 17 * 128 * 17,
    reps: 100,
  },
  {
    name: "bmm [64,17,17]@[64,17,128]",
    shapes: [[64, 17, 17], [64, 17, 128]],
    f: ([a, b]) => tf.matMul(a, b),
    flops: 2 * 64 * 17 * 17 * 128,
    reps: 100,
  },
  {
    name: "add [4096,1024]",
    shapes: [[4096, 1024], [4096, 1024]],
    f: ([a, b]) => tf.add(a, b),
    flops: 4096 * 1024,
    reps: 20,
  },
];

interface Result {
  ms: number;
  cpuPerWall: number;
}

function timeOp(op: Op): Result {
  const xs = op.shapes.map((s) => tf.randomUniform(s, -1, 1));
  for (let i = 0; i < 3; i++) op.f(xs).dispose(); // warm-up (V8 tier-up, XNNPACK packing)
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < op.reps; i++) {
    const y = op.f(xs);
    y.dataSync();
    y.dispose();
  }
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  tf.dispose(xs);
  return { ms: wall / op.reps, cpuPerWall: (c.user + c.system) / 1000 / wall };
}

const SPECS: FlagSpec[] = [
  { key: "rounds", flag: "rounds", kind: "int", min: 1, help: "rounds of every op (default 5)" },
  {
    key: "threads",
    flag: "threads",
    kind: "string",
    help: "thread counts, comma-separated (default 1,2; 1 is tfjs's own build)",
  },
  { key: "fast", flag: "fast", kind: "bool", help: "install the XNNPACK matmul routing first" },
];
const { values: args } = parseFlags(Deno.args, SPECS);
const rounds = (args.rounds as number | undefined) ?? 5;
const configs: number[] = String(args.threads ?? "1,2").split(",").map(Number);
const best = new Map<string, Result>();
for (let r = 0; r < rounds; r++) {
  for (const threads of configs) {
    if (tf.findBackend("wasm")) tf.removeBackend("wasm"); // ends the previous pthread pool
    const info = await initBackend({ backend: "wasm", threads });
    if (info.threads !== threads) throw new Error(`asked ${threads} threads, got ${info.summary}`);
    if (args.fast) installWasmMatMulFastPath();
    for (const op of OPS) {
      const key = `${threads}\t${op.name}`;
      const res = timeOp(op);
      const prev = best.get(key);
      if (!prev || res.ms < prev.ms) best.set(key, res);
    }
  }
}
console.log(
  `best of ${rounds} rounds; ${navigator.hardwareConcurrency} logical cores; ` +
    `matmul fast path ${args.fast ? "on" : "off"}`,
);
console.log(
  "op".padEnd(32) + configs.map((t) => `${t} thr: ms GFLOP/s cpu/wall`.padEnd(34)).join(""),
);
for (const op of OPS) {
  const cells = configs.map((t) => {
    const r = best.get(`${t}\t${op.name}`)!;
    const gf = op.flops / r.ms / 1e6;
    return `${r.ms.toFixed(2).padStart(9)} ${gf.toFixed(2).padStart(8)} ${
      r.cpuPerWall.toFixed(2).padStart(6)
    }`.padEnd(34);
  });
  console.log(op.name.padEnd(32) + cells.join(""));
}
