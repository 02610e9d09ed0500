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
export * from "./backends/mod.ts";
export * from "./backends/native/mod.ts";
export * from "./core/errors.ts";
export * from "./core/rng.ts";
export * from "./backends/fused.ts";
export * from "./model/layers.ts";
export * from "./model/vit.ts";
export * from "./model/heads.ts";
export * from "./methods/losses.ts";
export * from "./methods/two_view.ts";
export * from "./methods/mocov3.ts";
export * from "./methods/simclr.ts";
export * from "./methods/byol.ts";
export * from "./methods/swav.ts";
export * from "./methods/mod.ts";
export * from "./data/augment.ts";
export * from "./optim/optim.ts";
export * from "./optim/schedule.ts";
export * from "./train/config.ts";
export * from "./train/pretrain.ts";
export { backboneConfig, loadSplits, pretrainAugmentConfig } from "./train/setup.ts";
export { DivergenceError } from "./train/run_checkpoints.ts";
export * from "./train/versions.ts";
export * from "./train/rundir.ts";
export * from "./io/safetensors.ts";
export * from "./io/pth.ts";
export * from "./io/atomic.ts";
export * from "./io/lock.ts";
export * from "./io/exists.ts";
export * from "./train/checkpoint.ts";
export * from "./data/mod.ts";
export * from "./data/stats.ts";
export * from "./eval/features.ts";
export * from "./eval/knn.ts";
export * from "./eval/linear.ts";
export * from "./eval/finetune.ts";
export * from "./eval/results.ts";
export * from "./cli/eval_run.ts";
export * from "./eval/metrics.ts";
export * from "./experiments/stability.ts";
export * from "./experiments/stats.ts";
export * from "./parallel/mod.ts";
