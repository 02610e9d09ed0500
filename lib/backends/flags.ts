/**
 * The flags every task shares for its backend: `--backend` and `--precision`, as flag specs
 * (lib/core/flags.ts) whose choices are the backends' and precisions' names.
 *
 * @example
 * ```ts
 * import { parseFlags } from "../core/flags.ts";
 * import { BACKEND_FLAG } from "./flags.ts";
 * parseFlags(["--backend", "wasm"], [BACKEND_FLAG]).values.backend; // "wasm"
 * ```
 * @module
 */
import type { FlagSpec } from "../core/flags.ts";
import { BACKENDS, PRECISIONS } from "./mod.ts";

/**
 * `--backend`, the same flag in every task.
 *
 * @example
 * ```ts
 * parseFlags(["--backend", "wasm"], [BACKEND_FLAG]).values.backend; // "wasm"
 * ```
 */
export const BACKEND_FLAG: FlagSpec = {
  key: "backend",
  flag: "backend",
  kind: "string",
  choices: BACKENDS,
  help: "tensor backend (auto: the fastest that starts)",
};

/**
 * `--precision fp32|bf16|auto`: the matrix products' precision (bf16: mixed precision, native only).
 *
 * @example
 * ```ts
 * parseFlags(["--precision", "bf16"], [PRECISION_FLAG]).values.precision; // "bf16"
 * ```
 */
export const PRECISION_FLAG: FlagSpec = {
  key: "precision",
  flag: "precision",
  kind: "string",
  choices: PRECISIONS,
  help: "matmul precision: fp32, bf16 (bf16 inputs, fp32 sums; native backend only), or auto " +
    "(bf16 on the native backend of a CPU with AVX512-BF16, else fp32)",
};
