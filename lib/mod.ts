/**
 * vitssl: MoCo v3 for Vision Transformers on tfjs. This module re-exports the library, so a
 * notebook or script needs one import.
 *
 * @example
 * ```ts
 * import { createViT, initBackend, pretrain, resolveConfig } from "./lib/mod.ts";
 * await initBackend({ backend: "auto" });
 * const result = await pretrain(resolveConfig({ preset: "smoke", outDir: "/tmp/run" }));
 * ```
 * @module
 */
export * from "./backend.ts";
export * from "./rng.ts";
export * from "./ops.ts";
export * from "./vit.ts";
export * from "./heads.ts";
export * from "./moco.ts";
export * from "./frameworks/mod.ts";
export * from "./augment.ts";
export * from "./optim.ts";
export * from "./config.ts";
export * from "./train.ts";
export * from "./runlog.ts";
export * from "./safetensors.ts";
export * from "./io/atomic.ts";
export * from "./io/lock.ts";
export * from "./checkpoint.ts";
export * from "./data/mod.ts";
export * from "./features.ts";
export * from "./eval/knn.ts";
export * from "./eval/linear.ts";
export * from "./eval/finetune.ts";
export * from "./eval/results.ts";
export * from "./eval/run.ts";
export * from "./eval/metrics.ts";
export * from "./stability.ts";
export * from "./parallel/mod.ts";
