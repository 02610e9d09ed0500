/**
 * The names of the self-supervised methods, on their own so that a config can check a name
 * without loading the methods (the registry of `mod.ts` is built from the same list).
 *
 * @example
 * ```ts
 * import { FRAMEWORKS } from "./names.ts";
 * FRAMEWORKS.includes("byol"); // true
 * ```
 * @module
 */

/** The method names `createFramework` accepts. */
export const FRAMEWORKS = ["mocov3", "simclr", "byol", "swav"] as const;
/** A method name. */
export type FrameworkName = typeof FRAMEWORKS[number];
