/**
 * The `native` tfjs backend: tfjs-backend-cpu's storage (tensors in ordinary TypedArrays) with
 * the hot kernels in this project's C library (`src/`, through `ffi.ts`), multi-threaded and
 * bit-identical for any thread count.
 *
 * Every kernel of the `cpu` backend is registered for `native` too, so anything without a native
 * kernel still runs (on the cpu backend's JS kernel, same data). Native kernels, float32 unless
 * noted: `BatchMatMul` and `_FusedMatMul` (bias, linear or relu), `Add`, `Sub`, `Multiply`,
 * `RealDiv`, `Maximum`, `Minimum`, `SquaredDifference` (any broadcast that collapses to 4 axes),
 * `Pow`, `Neg`, `Square`, `Sqrt`, `Rsqrt`, `Relu`, `Exp`, `Abs`, `Reciprocal`, `Floor`, `Step`,
 * `Sum` and `Mean` over leading or trailing axes, `Transpose` and `Slice` (float32 and int32,
 * any), `Tile` (of unit axes), `PadV2` (one padded axis), `MirrorPad`, `Concat` and `SplitV`
 * (4-byte types), the augmentation's `ClipByValue`, `DepthwiseConv2dNative` and bilinear
 * `CropAndResize`, `TopK` (sorted, finite values: see {@link topKKernel}), and the fused kernels
 * of `lib/backends/wasm/kernels.ts` (LayerNorm, GELU, attention, each with its gradient; AdamW;
 * EMA), the fused linear layers, BatchNorm over the batch and the class token's row sum. Other
 * inputs fall back to the JS kernel.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { startNative } from "./backend.ts";
 * const { threads, isa } = await startNative({ threads: 2 }); // 2, "avx512"
 * tf.matMul(tf.ones([2, 3]), tf.ones([3, 4])).print();
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { MathBackendCPU } from "@tensorflow/tfjs-backend-cpu";
import {
  FUSED_KERNELS,
  installFusedGradients,
  KERNEL_FAST_PATHS,
  swapGroups,
} from "../wasm/kernels.ts";
import { type FastPaths, registerFastPaths } from "../fused.ts";
import {
  BINARY_OPS,
  type Buf,
  type GemmMode,
  type IsaName,
  type NativeLib,
  NativeLoadError,
  openNative,
  UNARY_OPS,
} from "./ffi.ts";

/** The backend's registered name. */
export const NATIVE_BACKEND = "native";

/**
 * Bytes of freed output buffers kept for reuse (a fresh one costs a page fault per 4 KiB): a
 * quarter of the machine's memory, at most 8 GiB. The pool holds only buffers that were live
 * at once before, so it raises no peak; it keeps the resident size near the last peak.
 */
const POOL_BYTES = (() => {
  try {
    return Math.min(8 * 2 ** 30, Deno.systemMemoryInfo().total / 4);
  } catch {
    return 2 ** 30;
  }
})();

/**
 * tfjs-backend-cpu's backend with the native library beside it, and a pool of output buffers.
 *
 * Native kernels take their outputs from {@link NativeBackend.alloc}: buffers of tensors that
 * were freed, by size. A buffer returns to the pool when the last tensor whose data views it is
 * disposed (every stored array passes through `write` or `move`, which count them, so slices
 * that alias a buffer keep it alive), and `readSync` / `read` return copies of pooled data, so
 * nothing outside the backend ever sees a buffer that is reused.
 */
export class NativeBackend extends MathBackendCPU {
  /** The opened library (its thread count and instruction set are process-wide). */
  readonly lib: NativeLib;
  /** Live data entries per buffer that {@link NativeBackend.alloc} made. */
  private owned = new WeakMap<ArrayBufferLike, number>();
  private free = new Map<number, ArrayBuffer[]>();
  private pooled = 0;

  constructor(lib: NativeLib) {
    super();
    this.lib = lib;
  }

  /** An output array of `n` elements (contents undefined: every native kernel writes all). */
  alloc(n: number, kind: "float32" | "int32" = "float32"): Float32Array | Int32Array {
    const bytes = n * 4;
    const list = this.free.get(bytes);
    let buf = list?.pop();
    if (buf) this.pooled -= bytes;
    else buf = new ArrayBuffer(bytes);
    this.owned.set(buf, 0);
    return kind === "float32" ? new Float32Array(buf) : new Int32Array(buf);
  }

  /** A float32 output array of `n` elements (see {@link NativeBackend.alloc}). */
  f32(n: number): Float32Array {
    return this.alloc(n) as Float32Array;
  }

  /**
   * The float32 values of `dataId` if a kernel may overwrite them in place: one tensor holds the
   * data, and its array is the whole of a buffer that {@link NativeBackend.alloc} made and no
   * other data entry uses (a tensor made from a caller's array, or a view into a file's bytes,
   * may share its memory with something this backend cannot see). Else undefined.
   */
  exclusive(dataId: object): Float32Array | undefined {
    const v = this.data.get(dataId)?.values;
    if (!(v instanceof Float32Array) || this.refCount(dataId) !== 1) return undefined;
    return this.owned.get(v.buffer) === 1 && v.byteLength === v.buffer.byteLength ? v : undefined;
  }

  private track(values: unknown, delta: number): void {
    if (!ArrayBuffer.isView(values)) return;
    const buf = values.buffer;
    const count = this.owned.get(buf);
    if (count === undefined) return;
    if (count + delta > 0) {
      this.owned.set(buf, count + delta);
      return;
    }
    this.owned.delete(buf);
    const bytes = buf.byteLength;
    if (bytes === 0 || this.pooled + bytes > POOL_BYTES || !(buf instanceof ArrayBuffer)) return;
    let list = this.free.get(bytes);
    if (!list) this.free.set(bytes, list = []);
    list.push(buf);
    this.pooled += bytes;
  }

  override write(values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType) {
    const id = super.write(values, shape, dtype);
    this.track(values, 1);
    return id;
  }

  override move(
    dataId: tf.DataId,
    values: tf.backend_util.BackendValues,
    shape: number[],
    dtype: tf.DataType,
    refCount: number,
  ): void {
    // data.get of an id that is not here would ask the engine to move it here (recursion).
    const old = this.data.has(dataId) ? this.data.get(dataId).values : undefined;
    super.move(dataId, values, shape, dtype, refCount);
    this.track(values, 1);
    if (old) this.track(old, -1);
  }

  override disposeData(dataId: tf.DataId, force = false): boolean {
    const values = this.data.has(dataId) ? this.data.get(dataId).values : undefined;
    const done = super.disposeData(dataId, force);
    if (values && !this.data.has(dataId)) this.track(values, -1);
    return done;
  }

  override readSync(dataId: tf.DataId): tf.backend_util.BackendValues {
    const v = super.readSync(dataId);
    return ArrayBuffer.isView(v) && this.owned.has(v.buffer) ? v.slice() : v;
  }

  override read(dataId: tf.DataId): Promise<tf.backend_util.BackendValues> {
    return Promise.resolve(this.readSync(dataId));
  }

  /**
   * A buffer over the tensor's own data, not a copy: only the cpu backend's kernels call this
   * (GatherV2, StridedSlice, ...), and they read it within the call. The copy `readSync` makes
   * cost a gather of 256 rows from a 60,000 x 784 tensor a 188 MB copy.
   */
  override bufferSync<R extends tf.Rank, D extends tf.DataType>(
    t: tf.TensorInfo,
  ): tf.TensorBuffer<R, D> {
    const v = this.data.get(t.dataId)?.values;
    if (v instanceof Float32Array || v instanceof Int32Array) {
      return tf.buffer(t.shape as tf.ShapeMap[R], t.dtype as D, v as tf.DataTypeMap[D]);
    }
    return super.bufferSync(t);
  }

  /** Drops the pooled buffers (the garbage collector frees them). */
  override dispose(): void {
    this.free.clear();
    this.pooled = 0;
    super.dispose();
  }
}

type Info = tf.TensorInfo;
interface Args<A = Record<string, unknown>> {
  inputs: Record<string, Info>;
  backend: NativeBackend;
  attrs: A;
}
type KernelFn = (args: never) => Info | Info[];

const size = (shape: readonly number[]) => shape.reduce((p, q) => p * q, 1);

/** The Float32Array (or Int32Array) of `t`, or undefined for other storage. */
function vals(backend: NativeBackend, t: Info): Buf | undefined {
  const v = backend.data.get(t.dataId)?.values;
  return v instanceof Float32Array || v instanceof Int32Array ? v : undefined;
}

function f32(backend: NativeBackend, t: Info): Float32Array | undefined {
  const v = t.dtype === "float32" ? backend.data.get(t.dataId)?.values : undefined;
  if (v instanceof Float32Array) return v;
  // tfjs casts int32 and bool to float32 without a copy: the tensor keeps the integer array (a
  // one-hot label matrix, an integer exponent). Read as floats where every value is exact, else
  // the JS kernel: the result is then the JS kernel's (one rounding of the exact value).
  if (v instanceof Uint8Array) return Float32Array.from(v);
  if (v instanceof Int32Array && v.every((x) => x <= 2 ** 24 && x >= -(2 ** 24))) {
    return Float32Array.from(v);
  }
  return undefined;
}

function output(backend: NativeBackend, shape: number[], values: Buf, dtype: tf.DataType) {
  return backend.makeTensorInfo(shape, dtype, values);
}

/** Largest tensor the C side indexes with 32-bit ints. */
const MAX_INT = 2 ** 31 - 1;

// ---------------------------------------------------------------------------------------------
// Matmuls.
// ---------------------------------------------------------------------------------------------

/** `op(a) @ op(b)` for float32 `a`, `b` natively, or undefined where it does not apply. */
function matmul(backend: NativeBackend, a: Info, b: Info, ta: boolean, tb: boolean) {
  const va = f32(backend, a), vb = f32(backend, b);
  if (!va || !vb) return undefined;
  const ra = a.shape.length, rb = b.shape.length;
  const shapeA = a.shape.slice(0, -2), shapeB = b.shape.slice(0, -2);
  const batchA = size(shapeA), batchB = size(shapeB);
  const m = ta ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = ta ? a.shape[ra - 2] : a.shape[ra - 1];
  const n = tb ? b.shape[rb - 2] : b.shape[rb - 1];
  if (k !== (tb ? b.shape[rb - 1] : b.shape[rb - 2])) return undefined; // the JS kernel says why
  let batchShape: number[];
  try {
    batchShape = tf.backend_util.assertAndGetBroadcastShape(shapeA, shapeB);
  } catch {
    return undefined;
  }
  const batch = size(batchShape);
  if (!(batchA === batch || batchA === 1) || !(batchB === batch || batchB === 1)) return undefined;
  if (batchA > 1 && batchB > 1 && shapeA.length !== shapeB.length) return undefined;
  if (batch * m * n > MAX_INT || batchA * m * k > MAX_INT || batchB * k * n > MAX_INT) {
    return undefined;
  }
  const out = backend.f32(batch * m * n);
  if (batchB === 1 && !ta) {
    // [batch, m, k] @ [k, n]: a's rows are contiguous, so one product of batch * m rows.
    backend.lib.bmm(va, vb, out, 1, batchA * m, k, n, false, tb, 0, 0);
    if (batchA === 1 && batch > 1) {
      for (let i = 1; i < batch; i++) out.copyWithin(i * m * n, 0, m * n);
    }
  } else {
    backend.lib.bmm(
      va,
      vb,
      out,
      batch,
      m,
      k,
      n,
      ta,
      tb,
      batchA === 1 ? 0 : m * k,
      batchB === 1 ? 0 : k * n,
    );
  }
  return output(backend, [...batchShape, m, n], out, "float32");
}

// ---------------------------------------------------------------------------------------------
// Elementwise ops.
// ---------------------------------------------------------------------------------------------

/**
 * Shape and strides of `out = a op b` with broadcasting, collapsed to 4 axes: `[shape, sa, sb]`
 * (strides 0 on broadcast axes), or undefined if more than 4 axes remain.
 */
export function broadcastPlan(
  shapeA: readonly number[],
  shapeB: readonly number[],
  out: readonly number[],
): Int32Array | undefined {
  const r = out.length;
  const pad = (s: readonly number[]) => [...Array(r - s.length).fill(1), ...s];
  const pa = pad(shapeA), pb = pad(shapeB);
  // Per axis of out: does a (b) vary along it?
  const dims: number[] = [], va: boolean[] = [], vb: boolean[] = [];
  for (let i = 0; i < r; i++) {
    if (out[i] === 1) continue;
    const ea = pa[i] !== 1, eb = pb[i] !== 1;
    const last = dims.length - 1;
    if (last >= 0 && va[last] === ea && vb[last] === eb) dims[last] *= out[i];
    else dims.push(out[i]), va.push(ea), vb.push(eb);
  }
  if (dims.length > 4) return undefined;
  while (dims.length < 4) dims.unshift(1), va.unshift(false), vb.unshift(false);
  const strides = (v: boolean[]) => {
    const s = [0, 0, 0, 0];
    let acc = 1;
    for (let i = 3; i >= 0; i--) if (v[i]) s[i] = acc, acc *= dims[i];
    return s;
  };
  return Int32Array.from([...dims, ...strides(va), ...strides(vb)]);
}

function binaryKernel(op: number) {
  return (orig: KernelFn) => (args: Args) => {
    const { inputs: { a, b }, backend } = args;
    const va = f32(backend, a), vb = f32(backend, b);
    if (va && vb) {
      let shape: number[] | undefined;
      try {
        shape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
      } catch {
        shape = undefined;
      }
      const plan = shape && size(shape) <= MAX_INT
        ? broadcastPlan(a.shape, b.shape, shape)
        : undefined;
      if (shape && plan) {
        const out = backend.f32(size(shape));
        if (out.length > 0) backend.lib.binary(op, va, vb, out, plan);
        return output(backend, shape, out, "float32");
      }
    }
    return orig(args as never);
  };
}

function unaryKernel(op: number, alphaOf: (attrs: Record<string, unknown>) => number = () => 0) {
  return (orig: KernelFn) => (args: Args) => {
    const { inputs: { x }, backend, attrs } = args;
    const v = f32(backend, x);
    if (!v || v.length > MAX_INT) return orig(args as never);
    const out = backend.f32(v.length);
    if (out.length) backend.lib.unary(op, v, out, out.length, alphaOf(attrs));
    return output(backend, x.shape, out, "float32");
  };
}

// ---------------------------------------------------------------------------------------------
// Reductions, transposes, copies.
// ---------------------------------------------------------------------------------------------

function reduceKernel(mean: boolean) {
  return (orig: KernelFn) => (args: Args<{ axis: number | number[]; keepDims: boolean }>) => {
    const { inputs: { x }, backend, attrs: { axis, keepDims } } = args;
    const v = f32(backend, x);
    const rank = x.shape.length;
    const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
    const leading = axes.every((ax, i) => ax === i);
    const trailing = axes.every((ax, i) => ax === rank - axes.length + i);
    if (!v || axes.length === 0 || !(leading || trailing) || v.length > MAX_INT) {
      return orig(args as never);
    }
    const kept = x.shape.filter((_, i) => !axes.includes(i));
    const shape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : kept;
    const reduced = size(axes.map((i) => x.shape[i])), rest = size(kept);
    const out = backend.f32(rest);
    const div = mean ? reduced : 1;
    if (rest > 0 && reduced === 0) out.fill(mean ? NaN : 0);
    else if (rest > 0) {
      if (leading) backend.lib.sumCols(v, out, reduced, rest, div);
      else backend.lib.sumRows(v, out, rest, reduced, div);
    }
    return output(backend, shape, out, "float32");
  };
}

/** Source strides of a contiguous `shape`. */
function stridesOf(shape: readonly number[]): number[] {
  const s = shape.map(() => 1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/**
 * `out[i] = v[offset + sum_a i_a strides[a]]` for out of `shape` (a strided view of v: any
 * transpose or slice), as one swap of axis groups where that fits, else the general copy.
 */
function gather(
  backend: NativeBackend,
  v: Buf,
  offset: number,
  shape: number[],
  strides: number[],
): Buf {
  const out = backend.alloc(size(shape), v instanceof Float32Array ? "float32" : "int32");
  if (out.length === 0) return out;
  // Drop unit axes and merge axes that are contiguous in the source.
  const dims: number[] = [], st: number[] = [];
  shape.forEach((d, a) => {
    if (d === 1) return;
    const last = dims.length - 1;
    if (last >= 0 && st[last] === strides[a] * d) dims[last] *= d, st[last] = strides[a];
    else dims.push(d), st.push(strides[a]);
  });
  if (dims.length === 0) dims.push(1), st.push(1);
  if (dims.length > 8) throw new Error("unreachable: at most 8 axes after merging");
  const src = offset ? v.subarray(offset) : v;
  backend.lib.transposeNd(src, out, dims.length, Int32Array.from([...dims, ...st]));
  return out;
}

const transposeKernel = (orig: KernelFn) => (args: Args<{ perm: number[] }>) => {
  const { inputs: { x }, backend, attrs: { perm } } = args;
  const v = vals(backend, x);
  if (!v || !(x.dtype === "float32" || x.dtype === "int32") || x.shape.length > 8) {
    return orig(args as never);
  }
  const outShape = perm.map((p) => x.shape[p]);
  const groups = swapGroups(x.shape, perm);
  if (groups && groups[1] > 1 && groups[2] > 1) {
    const out = backend.alloc(v.length, x.dtype);
    const [batch, rows, cols, inner] = groups;
    if (v.length) backend.lib.transpose(v, out, batch, rows, cols, inner);
    return output(backend, outShape, out, x.dtype);
  }
  const st = stridesOf(x.shape);
  return output(
    backend,
    outShape,
    gather(backend, v, 0, outShape, perm.map((p) => st[p])),
    x.dtype,
  );
};

/**
 * GatherV2 without batch dims: whole inner blocks copied per index (the cpu kernel reads element
 * by element through a TensorBuffer, 7 ms for 256 rows of 784). Out-of-range indices go to the
 * cpu kernel, which throws its error.
 */
const gatherKernel = (orig: KernelFn) =>
(
  args: Args<{ axis: number; batchDims?: number }>,
) => {
  const { inputs: { x, indices }, backend, attrs } = args;
  const v = vals(backend, x), idx = vals(backend, indices);
  if (
    !v || !idx || !(x.dtype === "float32" || x.dtype === "int32") || indices.dtype !== "int32" ||
    (attrs.batchDims ?? 0) !== 0
  ) {
    return orig(args as never);
  }
  const axis = tf.util.parseAxisParam(attrs.axis, x.shape)[0];
  const dim = x.shape[axis];
  if (!idx.every((i) => i >= 0 && i < dim)) return orig(args as never);
  const outer = size(x.shape.slice(0, axis)), inner = size(x.shape.slice(axis + 1));
  const out = alloc(backend, v, outer * idx.length * inner);
  for (let o = 0, w = 0; o < outer; o++) {
    const base = o * dim * inner;
    for (let j = 0; j < idx.length; j++, w += inner) {
      const from = base + idx[j] * inner;
      out.set(v.subarray(from, from + inner), w);
    }
  }
  const shape = [...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)];
  return output(backend, shape, out, x.dtype);
};

const sliceKernel = (orig: KernelFn) =>
(
  args: Args<{ begin: number | number[]; size: number | number[] }>,
) => {
  const { inputs: { x }, backend, attrs } = args;
  const v = vals(backend, x);
  if (!v || !(x.dtype === "float32" || x.dtype === "int32") || x.shape.length > 8) {
    return orig(args as never);
  }
  const [begin, sz] = tf.slice_util.parseSliceParams(x as tf.Tensor, attrs.begin, attrs.size);
  tf.slice_util.assertParamsValid(x as tf.Tensor, begin, sz);
  const st = stridesOf(x.shape);
  const offset = begin.reduce((s, b, a) => s + b * st[a], 0);
  return output(backend, sz, gather(backend, v, offset, sz, st), x.dtype);
};

/** `Tile` where every repeated axis has size 1: a gather with stride 0 on those axes. */
const tileKernel = (orig: KernelFn) => (args: Args<{ reps: number[] }>) => {
  const { inputs: { x }, backend, attrs: { reps } } = args;
  const v = vals(backend, x);
  const ok = v && (x.dtype === "float32" || x.dtype === "int32") && x.shape.length <= 8 &&
    x.shape.every((d, a) => d === 1 || reps[a] === 1);
  if (!ok) return orig(args as never);
  const st = stridesOf(x.shape).map((s, a) => (reps[a] > 1 ? 0 : s));
  const shape = x.shape.map((d, a) => d * reps[a]);
  return output(backend, shape, gather(backend, v, 0, shape, st), x.dtype);
};

/** `PadV2` of a float32 tensor padded on one axis: fill, then one strided block copy. */
const padKernel = (orig: KernelFn) =>
(
  args: Args<{ paddings: [number, number][]; constantValue: number }>,
) => {
  const { inputs: { x }, backend, attrs: { paddings, constantValue } } = args;
  const v = f32(backend, x);
  const padded = paddings.map((p, a) => (p[0] || p[1] ? a : -1)).filter((a) => a >= 0);
  if (!v || padded.length !== 1 || paddings.some((p) => p[0] < 0 || p[1] < 0)) {
    return orig(args as never);
  }
  const ax = padded[0];
  const shape = x.shape.map((d, a) => d + paddings[a][0] + paddings[a][1]);
  const out = backend.f32(size(shape));
  out.fill(constantValue);
  const [outer, len, inner] = around(x.shape, ax);
  if (outer * len * inner > 0) {
    backend.lib.copyRows(
      v,
      0,
      out,
      paddings[ax][0] * inner,
      outer,
      len * inner,
      len * inner,
      shape[ax] * inner,
    );
  }
  return output(backend, shape, out, "float32");
};

/** `MirrorPad` (reflect or symmetric) as a gather with per-axis index tables. */
const mirrorPadKernel = (orig: KernelFn) =>
(
  args: Args<{ paddings: [number, number][]; mode: "reflect" | "symmetric" }>,
) => {
  const { inputs: { x }, backend, attrs: { paddings, mode } } = args;
  const v = vals(backend, x);
  if (!v || !(x.dtype === "float32" || x.dtype === "int32") || x.shape.length > 8) {
    return orig(args as never);
  }
  const offset = mode === "reflect" ? 0 : 1;
  const shape = x.shape.map((d, a) => paddings[a][0] + d + paddings[a][1]);
  const st = stridesOf(x.shape);
  const idx: number[] = [];
  shape.forEach((n, a) => {
    const start = paddings[a][0], end = start + x.shape[a];
    for (let o = 0; o < n; o++) {
      let c = o;
      if (c < start) c = start * 2 - c - offset;
      else if (c >= end) c = (end - 1) * 2 - c + offset;
      idx.push((c - start) * st[a]);
    }
  });
  const out = backend.alloc(size(shape), x.dtype);
  if (out.length) {
    backend.lib.gatherIdx(v, out, shape.length, Int32Array.from(shape), Int32Array.from(idx));
  }
  return output(backend, shape, out, x.dtype);
};

const clipKernel = (orig: KernelFn) =>
(
  args: Args<{ clipValueMin: number; clipValueMax: number }>,
) => {
  const { inputs: { x }, backend, attrs: { clipValueMin, clipValueMax } } = args;
  const v = f32(backend, x);
  if (!v) return orig(args as never);
  const out = backend.f32(v.length);
  if (out.length) backend.lib.clip(v, out, out.length, clipValueMin, clipValueMax);
  return output(backend, x.shape, out, "float32");
};

const depthwiseKernel = (orig: KernelFn) =>
(
  args: Args<{
    strides: [number, number] | number;
    pad: "valid" | "same" | number | tf.backend_util.ExplicitPadding;
    dilations: [number, number] | number;
    dimRoundingMode?: "floor" | "round" | "ceil";
    dataFormat?: string;
  }>,
) => {
  const { inputs: { x, filter }, backend, attrs } = args;
  const vx = f32(backend, x), vf = f32(backend, filter);
  if (!vx || !vf || (attrs.dataFormat && attrs.dataFormat !== "NHWC")) return orig(args as never);
  const dil = attrs.dilations ?? [1, 1];
  if (!tf.backend_util.eitherStridesOrDilationsAreOne(attrs.strides, dil)) {
    return orig(args as never);
  }
  const ci = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    attrs.strides,
    dil,
    attrs.pad,
    attrs.dimRoundingMode,
    true,
  );
  const out = backend.f32(size(ci.outShape));
  const meta = Int32Array.from([
    ci.batchSize,
    ci.inHeight,
    ci.inWidth,
    ci.inChannels,
    ci.outChannels / ci.inChannels,
    ci.filterHeight,
    ci.filterWidth,
    ci.outHeight,
    ci.outWidth,
    ci.strideHeight,
    ci.strideWidth,
    ci.dilationHeight,
    ci.dilationWidth,
    ci.padInfo.top,
    ci.padInfo.left,
  ]);
  if (out.length) backend.lib.dwconv(vx, vf, out, meta);
  return output(backend, ci.outShape, out, "float32");
};

const cropKernel = (orig: KernelFn) =>
(
  args: Args<{ cropSize: [number, number]; method: string; extrapolationValue: number }>,
) => {
  const { inputs: { image, boxes, boxInd }, backend, attrs } = args;
  const vi = f32(backend, image), vb = f32(backend, boxes), vn = vals(backend, boxInd);
  if (!vi || !vb || !(vn instanceof Int32Array) || attrs.method !== "bilinear") {
    return orig(args as never);
  }
  const [B, H, W, C] = image.shape, n = boxes.shape[0], [ch, cw] = attrs.cropSize;
  const shape = [n, ch, cw, C];
  const out = backend.f32(size(shape));
  if (out.length) {
    backend.lib.cropAndResize(
      vi,
      vb,
      vn,
      out,
      Int32Array.from([B, H, W, C, n, ch, cw]),
      attrs.extrapolationValue,
    );
  }
  return output(backend, shape, out, "float32");
};

/** `[outer, axis, inner]` sizes of `shape` around `axis`. */
const around = (shape: number[], axis: number) => [
  size(shape.slice(0, axis)),
  shape[axis],
  size(shape.slice(axis + 1)),
];

const fourBytes = (t: Info) => t.dtype === "float32" || t.dtype === "int32";
const alloc = (backend: NativeBackend, like: Buf, n: number): Buf =>
  backend.alloc(n, like instanceof Float32Array ? "float32" : "int32");

const splitKernel = (orig: KernelFn) =>
(
  args: Args<{ numOrSizeSplits: number | number[]; axis: number }>,
) => {
  const { inputs: { x }, backend, attrs: { numOrSizeSplits, axis } } = args;
  const v = fourBytes(x) ? vals(backend, x) : undefined;
  if (!v || v.length > MAX_INT) return orig(args as never);
  const ax = tf.util.parseAxisParam(axis, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
  const [outer, len, inner] = around(x.shape, ax);
  let start = 0;
  return sizes.map((s) => {
    const shape = x.shape.slice();
    shape[ax] = s;
    const out = alloc(backend, v, outer * s * inner);
    if (out.length) {
      backend.lib.copyRows(v, start * inner, out, 0, outer, s * inner, len * inner, s * inner);
    }
    start += s;
    return output(backend, shape, out, x.dtype);
  });
};

const concatKernel = (orig: KernelFn) =>
(
  args: { inputs: Info[]; backend: NativeBackend; attrs: { axis: number } },
) => {
  const { inputs, backend } = args;
  const vs = inputs.map((t) => (fourBytes(t) ? vals(backend, t) : undefined));
  const same = inputs.every((t) => t.dtype === inputs[0].dtype);
  if (inputs.length < 2 || !same || vs.some((v) => !v)) return orig(args as never);
  const ax = tf.util.parseAxisParam(args.attrs.axis, inputs[0].shape)[0];
  tf.backend_util.assertParamsConsistent(inputs.map((t) => t.shape), ax);
  const outShape = tf.backend_util.computeOutShape(inputs.map((t) => t.shape), ax);
  if (size(outShape) > MAX_INT) return orig(args as never);
  const out = alloc(backend, vs[0]!, size(outShape));
  const [outer, total, inner] = around(outShape, ax);
  let start = 0;
  inputs.forEach((t, i) => {
    const s = t.shape[ax];
    if (outer * s * inner > 0) {
      backend.lib.copyRows(
        vs[i]!,
        0,
        out,
        start * inner,
        outer,
        s * inner,
        s * inner,
        total * inner,
      );
    }
    start += s;
  });
  return output(backend, outShape, out, inputs[0].dtype);
};

/**
 * `TopK` of float32 `x` along its last axis with `sorted` true: the same values and indices as
 * tfjs-backend-cpu's kernel (value descending, equal values, -0 and +0 among them, by ascending
 * index). Falls back to the JS kernel for `sorted` false (whose order is that of tfjs's
 * Floyd-Rivest partition), other dtypes, k outside [0, n], and inputs holding a NaN or an
 * infinity (whose order tfjs leaves to its comparator's NaN results).
 */
const topKKernel = (orig: KernelFn) => (args: Args<{ k: number; sorted: boolean }>) => {
  const { inputs: { x }, backend, attrs: { k, sorted } } = args;
  const v = f32(backend, x);
  const n = x.shape[x.shape.length - 1];
  if (
    !v || !sorted || x.shape.length === 0 || !(Number.isInteger(k) && k >= 0 && k <= n) ||
    v.length > MAX_INT
  ) {
    return orig(args as never);
  }
  const rows = size(x.shape.slice(0, -1));
  const shape = [...x.shape.slice(0, -1), k];
  const vals = backend.f32(rows * k), idx = backend.alloc(rows * k, "int32") as Int32Array;
  if (rows * k > 0 && !backend.lib.topk(v, vals, idx, rows, n, k)) return orig(args as never);
  return [output(backend, shape, vals, "float32"), output(backend, shape, idx, "int32")];
};

// ---------------------------------------------------------------------------------------------
// The fused kernels (same inputs and attributes as lib/backends/wasm/kernels.ts's).
// ---------------------------------------------------------------------------------------------

function need(name: string, backend: NativeBackend, ...ts: Info[]): Float32Array[] {
  return ts.map((t) => {
    const v = f32(backend, t);
    if (!v) throw new Error(`${name}: expected float32 tensors, got ${t.dtype}`);
    return v;
  });
}

/**
 * A linear layer's input `x [m, k]`: float32, or (dtype int32, shape [m, k / 2]) k bf16 a row as
 * `linearGelu` stores them with `bf16Out` (`x16` true).
 */
function linearInput(name: string, backend: NativeBackend, x: Info) {
  if (x.dtype !== "int32") {
    return { vx: need(name, backend, x)[0] as Buf | Uint16Array, x16: false, k: x.shape[1] };
  }
  const v = vals(backend, x);
  if (!(v instanceof Int32Array)) throw new Error(`${name}: no data for the bf16 input`);
  return {
    vx: new Uint16Array(v.buffer, v.byteOffset, v.length * 2),
    x16: true,
    k: 2 * x.shape[1],
  };
}

/** A linear layer's operands `x [m, k]` (see linearInput), `w [n, k]`, optional `b [n]`, checked. */
function linearOperands(name: string, backend: NativeBackend, x: Info, w: Info, b?: Info) {
  const { vx, x16, k } = linearInput(name, backend, x);
  const [vw] = need(name, backend, w);
  const vb = b ? need(name, backend, b)[0] : null;
  const m = x.shape[0], n = w.shape[0];
  if (w.shape[1] !== k || (b && b.shape[b.shape.length - 1] !== n)) {
    throw new Error(`${name}: shapes ${x.shape}, ${w.shape}, ${b?.shape}`);
  }
  return { vx, x16, vw, vb, m, k, n };
}

/** Whether the GEMMs round their operands to bf16 in hardware (where storing bf16 is exact). */
function bf16Gemm(backend: NativeBackend): boolean {
  const mode = backend.lib.precision();
  return mode === "bf16-avx512bf16" || mode === "bf16-amx";
}

/** An output of `n` (even) bf16: the int32 array a tensor holds, and its halves for the kernel. */
function bf16Output(backend: NativeBackend, n: number) {
  const words = backend.alloc(n / 2, "int32") as Int32Array;
  return { words, halves: new Uint16Array(words.buffer, words.byteOffset, n) };
}

type NumAttrs = Record<string, number>;

/** An operand of the in-place kernels: float32, and where `written`, writable in place. */
function inPlaceOperand(backend: NativeBackend, t: Info | undefined, written: boolean) {
  const v = t && (written ? backend.exclusive(t.dataId) : f32(backend, t));
  if (!v) {
    throw new Error(
      `in-place update: an input is missing, not float32, or ${written ? "shared" : "unreadable"}`,
    );
  }
  return v;
}

/**
 * The native backend's in-place fast paths (see `FastPaths.adamwInPlace`): one kernel for all
 * parameters, where every tensor written is the backend's alone ({@link NativeBackend.exclusive});
 * else `undefined`, and the caller updates each parameter through `adamw` or `ema`.
 */
const IN_PLACE_PATHS: Pick<FastPaths, "adamwInPlace" | "emaInPlace"> = {
  adamwInPlace(items, c) {
    const written = items.flatMap(({ p, m, v }) => [p, m, v]);
    if (!inPlaceReady(written, items.map((i) => i.g))) return undefined;
    const inputs: tf.NamedTensorMap = {};
    items.forEach(({ p, g, m, v }, i) =>
      Object.assign(inputs, { [`p${i}`]: p, [`g${i}`]: g, [`m${i}`]: m, [`v${i}`]: v })
    );
    const hasDecay = items.map((i) => i.hasDecay ? 1 : 0);
    tf.engine().runKernel(FUSED_KERNELS.adamwInPlace, inputs, { ...c, hasDecay } as never);
    return true;
  },
  emaInPlace(pairs, mom) {
    if (!inPlaceReady(pairs.map((q) => q.t), pairs.map((q) => q.s))) return undefined;
    const inputs: tf.NamedTensorMap = {};
    pairs.forEach(({ t, s }, i) => Object.assign(inputs, { [`t${i}`]: t, [`s${i}`]: s }));
    tf.engine().runKernel(FUSED_KERNELS.emaInPlace, inputs, { count: pairs.length, mom });
    return true;
  },
};

/** Whether the native backend is active and may write `written` in place while reading `read`. */
function inPlaceReady(written: tf.Tensor[], read: tf.Tensor[]): boolean {
  const be = tf.backend();
  if (!(be instanceof NativeBackend) || written.length === 0) return false;
  const ids = new Set(written.map((t) => t.dataId));
  return ids.size === written.length && written.every((t) => be.exclusive(t.dataId)) &&
    read.every((t) => t.dtype === "float32" && !ids.has(t.dataId));
}

const fused: Record<string, (args: Args<NumAttrs>) => Info | Info[]> = {
  [FUSED_KERNELS.layerNorm]: ({ inputs: { x, gamma, beta }, backend, attrs }) => {
    const [vx, vg, vb] = need(FUSED_KERNELS.layerNorm, backend, x, gamma, beta);
    const d = gamma.shape[0], rows = vx.length / d, eps = attrs.eps;
    // As bf16 where the products round to bf16 anyway (see linearGelu).
    if (attrs.bf16Out && d % 2 === 0 && bf16Gemm(backend)) {
      const { words, halves } = bf16Output(backend, vx.length);
      if (vx.length) backend.lib.layernorm(vx, vg, vb, halves, rows, d, eps, true);
      return output(backend, [rows, d / 2], words, "int32");
    }
    const y = backend.f32(vx.length);
    if (vx.length) backend.lib.layernorm(vx, vg, vb, y, rows, d, eps);
    return output(backend, x.shape, y, "float32");
  },
  [FUSED_KERNELS.layerNormGrad]: ({ inputs: { dy, x, gamma, dres }, backend, attrs: { eps } }) => {
    const name = FUSED_KERNELS.layerNormGrad;
    const [vdy, vx, vg, vr] = need(name, backend, dy, x, gamma, ...(dres ? [dres] : []));
    const d = gamma.shape[0];
    const dx = backend.f32(vx.length), dg = backend.f32(d), db = backend.f32(d);
    backend.lib.layernormGrad(vdy, vx, vg, vr ?? null, dx, dg, db, vx.length / d, d, eps);
    return [
      output(backend, x.shape, dx, "float32"),
      output(backend, [d], dg, "float32"),
      output(backend, [d], db, "float32"),
    ];
  },
  [FUSED_KERNELS.batchNorm]: ({ inputs: { x, gamma, beta }, backend, attrs: { eps } }) => {
    const [vx, vg, vb] = need(FUSED_KERNELS.batchNorm, backend, x, gamma, beta);
    const [rows, d] = x.shape;
    const y = backend.f32(vx.length), mean = backend.f32(d), variance = backend.f32(d);
    backend.lib.batchnorm(vx, vg, vb, y, mean, variance, rows, d, eps);
    return [
      output(backend, x.shape, y, "float32"),
      output(backend, [d], mean, "float32"),
      output(backend, [d], variance, "float32"),
    ];
  },
  [FUSED_KERNELS.batchNormGrad]: (
    { inputs: { dy, x, gamma, mean, variance, dmean, dvar }, backend, attrs: { eps } },
  ) => {
    const [vdy, vx, vg, vm, vv, vdm, vdv] = need(
      FUSED_KERNELS.batchNormGrad,
      backend,
      dy,
      x,
      gamma,
      mean,
      variance,
      dmean,
      dvar,
    );
    const [rows, d] = x.shape;
    const dx = backend.f32(vx.length), dg = backend.f32(d), db = backend.f32(d);
    backend.lib.batchnormGrad(vdy, vx, vg, vm, vv, vdm, vdv, dx, dg, db, rows, d, eps);
    return [
      output(backend, x.shape, dx, "float32"),
      output(backend, [d], dg, "float32"),
      output(backend, [d], db, "float32"),
    ];
  },
  [FUSED_KERNELS.gelu]: ({ inputs: { x }, backend }) => {
    const [vx] = need(FUSED_KERNELS.gelu, backend, x);
    const y = backend.f32(vx.length);
    if (y.length) backend.lib.gelu(vx, y, y.length);
    return output(backend, x.shape, y, "float32");
  },
  [FUSED_KERNELS.geluGrad]: ({ inputs: { dy, x }, backend }) => {
    const [vdy, vx] = need(FUSED_KERNELS.geluGrad, backend, dy, x);
    const dx = backend.f32(vx.length);
    if (dx.length) backend.lib.geluGrad(vdy, vx, dx, dx.length);
    return output(backend, x.shape, dx, "float32");
  },
  [FUSED_KERNELS.adamw]: ({ inputs: { p, g, m, v }, backend, attrs: a }) => {
    const [vp, vg, vm, vv] = need(FUSED_KERNELS.adamw, backend, p, g, m, v);
    const n = vp.length;
    const p1 = backend.f32(n), m1 = backend.f32(n), v1 = backend.f32(n);
    backend.lib.adamw(
      vp,
      vg,
      vm,
      vv,
      p1,
      m1,
      v1,
      n,
      a.c1m,
      a.b2,
      a.c2,
      a.sbc2,
      a.eps,
      a.decay,
      a.step,
      !!a.hasDecay,
    );
    return [p1, m1, v1].map((o) => output(backend, p.shape, o, "float32"));
  },
  [FUSED_KERNELS.adamwInPlace]: ({ inputs, backend, attrs }) => {
    const hasDecay = attrs.hasDecay as unknown as number[];
    const [p, g, m, v] = ["p", "g", "m", "v"].map((k) =>
      hasDecay.map((_, i) => inPlaceOperand(backend, inputs[k + i], k !== "g"))
    );
    const { c1m, b2, c2, sbc2, eps, decay, step } = attrs;
    const c = { c1m, b2, c2, sbc2, eps, decay, step };
    backend.lib.adamwInPlace(p, g, m, v, hasDecay.map((d) => d === 1), c);
    return [];
  },
  [FUSED_KERNELS.emaInPlace]: ({ inputs, backend, attrs: { count, mom } }) => {
    const [t, s] = ["t", "s"].map((k) =>
      Array.from({ length: count }, (_, i) => inPlaceOperand(backend, inputs[k + i], k === "t"))
    );
    backend.lib.emaInPlace(t, s, mom, 1 - mom);
    return [];
  },
  [FUSED_KERNELS.rowSum]: ({ inputs: { x }, backend }) => {
    const [vx] = need(FUSED_KERNELS.rowSum, backend, x);
    const [rows, cols] = x.shape;
    const out = backend.f32(cols);
    backend.lib.sumColsF32(vx, out, rows, cols);
    return output(backend, [cols], out, "float32");
  },
  [FUSED_KERNELS.ema]: ({ inputs: { t, s }, backend, attrs: { mom } }) => {
    const [vt, vs] = need(FUSED_KERNELS.ema, backend, t, s);
    const t1 = backend.f32(vt.length);
    backend.lib.ema(vt, vs, t1, vt.length, mom, 1 - mom);
    return output(backend, t.shape, t1, "float32");
  },
  [FUSED_KERNELS.linear]: ({ inputs: { x, w, b, res }, backend }) => {
    const { vx, x16, vw, vb, m, k, n } = linearOperands(FUSED_KERNELS.linear, backend, x, w, b);
    const vr = res ? need(FUSED_KERNELS.linear, backend, res)[0] : null;
    if (res && (res.shape[0] !== m || res.shape[1] !== n)) {
      throw new Error(`${FUSED_KERNELS.linear}: residual ${res.shape}, output [${m},${n}]`);
    }
    const y = backend.f32(m * n);
    if (m * n > 0) backend.lib.linear(vx, vw, vb, vr, y, m, k, n, x16);
    return output(backend, [m, n], y, "float32");
  },
  [FUSED_KERNELS.linearGelu]: ({ inputs: { x, w, b }, backend, attrs }) => {
    const { vx, x16, vw, vb, m, k, n } = linearOperands(FUSED_KERNELS.linearGelu, backend, x, w, b);
    const h = backend.f32(m * n);
    // gelu(h) as bf16 where the products round to bf16 anyway: what they read, in half the bytes.
    if (attrs.bf16Out && n % 2 === 0 && bf16Gemm(backend)) {
      const { words, halves } = bf16Output(backend, m * n);
      if (m * n > 0) backend.lib.linearGelu(vx, vw, vb, h, halves, m, k, n, x16, true);
      return [output(backend, [m, n / 2], words, "int32"), output(backend, [m, n], h, "float32")];
    }
    const y = backend.f32(m * n);
    if (m * n > 0) backend.lib.linearGelu(vx, vw, vb, h, y, m, k, n, x16);
    return [output(backend, [m, n], y, "float32"), output(backend, [m, n], h, "float32")];
  },
  // With `pre` (fc2 after a GELU: x = gelu(pre)), dx is the gradient at pre.
  [FUSED_KERNELS.linearGrad]: ({ inputs: { dy, x, w, pre }, backend, attrs }) => {
    const name = FUSED_KERNELS.linearGrad;
    const { vx, x16, k } = linearInput(name, backend, x);
    const [vdy, vw, vp] = need(name, backend, dy, w, ...(pre ? [pre] : []));
    const m = x.shape[0], n = w.shape[0];
    const dx = backend.f32(m * k), dw = backend.f32(n * k);
    const db = attrs.hasBias ? backend.f32(n) : null;
    backend.lib.linearGrad(vdy, vx, vw, vp ?? null, dx, dw, db, m, k, n, x16);
    return [
      output(backend, [m, k], dx, "float32"),
      output(backend, [n, k], dw, "float32"),
      ...(db ? [output(backend, [n], db, "float32")] : []),
    ];
  },
  [FUSED_KERNELS.attention]: ({ inputs: { qkv }, backend, attrs }) => {
    const { batch, heads, scale } = attrs;
    const [vq] = need(FUSED_KERNELS.attention, backend, qkv);
    const [rows, d3] = qkv.shape, T = rows / batch, D = d3 / 3, hd = D / heads;
    const probs = backend.f32(batch * heads * T * T);
    const P = output(backend, [batch, heads, T, T], probs, "float32");
    // As bf16 where the products round to bf16 anyway (see linearGelu).
    if (attrs.bf16Out && D % 2 === 0 && bf16Gemm(backend)) {
      const { words, halves } = bf16Output(backend, rows * D);
      if (rows > 0) backend.lib.attention(vq, halves, probs, batch, T, heads, hd, scale, true);
      return [output(backend, [rows, D / 2], words, "int32"), P];
    }
    const out = backend.f32(rows * D);
    if (rows > 0) backend.lib.attention(vq, out, probs, batch, T, heads, hd, scale);
    return [output(backend, [rows, D], out, "float32"), P];
  },
  [FUSED_KERNELS.attentionGrad]: (
    { inputs: { dout, dprobs, qkv, probs }, backend, attrs: { batch, heads, scale } },
  ) => {
    const [vd, vq, vp] = need(FUSED_KERNELS.attentionGrad, backend, dout, qkv, probs);
    // No dprobs: the probabilities had no consumer (their gradient is zero).
    const vdp = dprobs ? need(FUSED_KERNELS.attentionGrad, backend, dprobs)[0] : null;
    const [rows, d3] = qkv.shape, T = rows / batch, D = d3 / 3;
    const dqkv = backend.f32(vq.length);
    if (rows > 0) {
      backend.lib.attentionGrad(vd, vdp, vq, vp, dqkv, batch, T, heads, D / heads, scale);
    }
    return output(backend, qkv.shape, dqkv, "float32");
  },
};

// ---------------------------------------------------------------------------------------------
// Registration.
// ---------------------------------------------------------------------------------------------

/** Kernels of the cpu backend replaced by native ones: name -> (cpu kernel) -> native kernel. */
const OVERRIDES: Record<string, (orig: KernelFn) => KernelFn> = {
  BatchMatMul: (orig) => (args: Args<{ transposeA: boolean; transposeB: boolean }>) => {
    const { inputs: { a, b }, backend, attrs } = args;
    return matmul(backend, a, b, attrs.transposeA, attrs.transposeB) ?? orig(args as never);
  },
  _FusedMatMul: (orig) =>
  (
    args: Args<{ transposeA: boolean; transposeB: boolean; activation: string }>,
  ) => {
    const { inputs: { a, b, bias, preluActivationWeights }, backend, attrs } = args;
    const simple = !preluActivationWeights &&
      (attrs.activation === "linear" || attrs.activation === "relu" || !attrs.activation);
    const prod = simple ? matmul(backend, a, b, attrs.transposeA, attrs.transposeB) : undefined;
    if (!prod) return orig(args as never);
    let out = prod;
    if (bias) {
      const add = binaryKernel(BINARY_OPS.add)(() => {
        throw new Error("unreachable");
      });
      const withBias = f32(backend, bias)
        ? add({ inputs: { a: out, b: bias }, backend, attrs: {} })
        : undefined;
      if (!withBias) {
        backend.disposeIntermediateTensorInfo(prod);
        return orig(args as never);
      }
      backend.disposeIntermediateTensorInfo(out);
      out = withBias as Info;
    }
    if (attrs.activation === "relu") {
      const v = f32(backend, out)!, y = backend.f32(v.length);
      backend.lib.unary(UNARY_OPS.relu, v, y, v.length, 0);
      backend.disposeIntermediateTensorInfo(out);
      out = output(backend, out.shape, y, "float32");
    }
    return out;
  },
  Add: binaryKernel(BINARY_OPS.add),
  Sub: binaryKernel(BINARY_OPS.sub),
  Multiply: binaryKernel(BINARY_OPS.mul),
  RealDiv: binaryKernel(BINARY_OPS.div),
  Maximum: binaryKernel(BINARY_OPS.max),
  Minimum: binaryKernel(BINARY_OPS.min),
  SquaredDifference: binaryKernel(BINARY_OPS.sqdiff),
  Pow: binaryKernel(BINARY_OPS.pow),
  Neg: unaryKernel(UNARY_OPS.neg),
  Square: unaryKernel(UNARY_OPS.square),
  Sqrt: unaryKernel(UNARY_OPS.sqrt),
  Rsqrt: unaryKernel(UNARY_OPS.rsqrt),
  Relu: unaryKernel(UNARY_OPS.relu),
  Exp: unaryKernel(UNARY_OPS.exp),
  Abs: unaryKernel(UNARY_OPS.abs),
  Reciprocal: unaryKernel(UNARY_OPS.reciprocal),
  Floor: unaryKernel(UNARY_OPS.floor),
  Step: unaryKernel(UNARY_OPS.step, (attrs) => Number(attrs.alpha ?? 0)),
  Sum: reduceKernel(false),
  Mean: reduceKernel(true),
  Transpose: transposeKernel,
  Slice: sliceKernel,
  GatherV2: gatherKernel,
  Tile: tileKernel,
  PadV2: padKernel,
  MirrorPad: mirrorPadKernel,
  ClipByValue: clipKernel,
  DepthwiseConv2dNative: depthwiseKernel,
  CropAndResize: cropKernel,
  SplitV: splitKernel,
  Concat: concatKernel,
  TopK: topKKernel,
};

let registered = false;

/** Registers the `native` backend and its kernels with tfjs (once; the library must load). */
function register(lib: NativeLib): void {
  if (registered) return;
  installFusedGradients();
  tf.registerBackend(NATIVE_BACKEND, () => new NativeBackend(lib), -1);
  for (const k of tf.getKernelsForBackend("cpu")) {
    const make = OVERRIDES[k.kernelName];
    const kernelFunc = make ? make(k.kernelFunc as KernelFn) : k.kernelFunc;
    tf.registerKernel({ ...k, backendName: NATIVE_BACKEND, kernelFunc: kernelFunc as never });
  }
  for (const [name, fn] of Object.entries(fused)) {
    tf.registerKernel({ kernelName: name, backendName: NATIVE_BACKEND, kernelFunc: fn as never });
  }
  // The model's layers and the optimiser reach the fused kernels through lib/backends/fused.ts.
  registerFastPaths(NATIVE_BACKEND, { ...KERNEL_FAST_PATHS, ...IN_PLACE_PATHS });
  registered = true;
}

/** What {@link startNative} started. */
export interface NativeInfo {
  /** Threads of the library's pool (the calling thread included). */
  threads: number;
  /** The instruction set in use. */
  isa: IsaName;
  /** The matrix products' precision (`fp32`, or the bf16 mode this CPU runs). */
  gemm: GemmMode;
  /** The library file. */
  path: string;
}

/** Options of {@link startNative}. */
export interface NativeOptions {
  /** Threads (default: every online processor). */
  threads?: number;
  /** Instruction set (default: the best the CPU has, or `VITSSL_NATIVE_ISA`). */
  isa?: IsaName;
  /**
   * Precision of the matrix products (MatMul, BatchMatMul, _FusedMatMul), process-wide: `fp32`
   * (default) or `bf16` (inputs rounded to bf16, float32 accumulation; AVX512-BF16 where the CPU
   * has it, else emulated). Everything else stays float32.
   */
  precision?: "fp32" | "bf16" | "auto";
}

/**
 * Compares a few native kernels with plain JS arithmetic on small inputs that cover the vector
 * paths and their remainders; throws {@link NativeLoadError} on a mismatch (a miscompiled or
 * wrong library must not train silently).
 */
export function selfCheck(lib: NativeLib): void {
  const rnd = (n: number, seed: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 0.5);
  for (
    const [m, k, n, ta, tb] of [[37, 19, 45, false, true], [13, 300, 33, true, false]] as const
  ) {
    const a = rnd(m * k, 1), b = rnd(k * n, 2), c = new Float32Array(m * n);
    lib.bmm(a, b, c, 1, m, k, n, ta, tb, 0, 0);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          s += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
        }
        if (!(Math.abs(c[i * n + j] - s) <= 1e-4 * (1 + Math.abs(s)))) {
          throw new NativeLoadError(
            `the native library failed its self-check (matmul ${m}x${k}x${n}: ` +
              `${c[i * n + j]} for ${s}): rebuild it with \`bash lib/backends/native/build.sh\``,
          );
        }
      }
    }
  }
  const x = rnd(37, 3), y = new Float32Array(37);
  lib.gelu(x, y, 37);
  for (let i = 0; i < 37; i++) {
    const want = 0.5 * x[i] * (1 + erf(x[i] / Math.SQRT2));
    if (!(Math.abs(y[i] - want) < 1e-5)) {
      throw new NativeLoadError(
        `the native library failed its self-check (gelu(${x[i]}) = ${y[i]}, not ${want})`,
      );
    }
  }
}

/** erf to ~1e-7 (Abramowitz & Stegun 7.1.26), for the self-check. */
function erf(x: number): number {
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const p = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t +
    0.254829592) * t;
  return Math.sign(x) * (1 - p * Math.exp(-x * x));
}

/**
 * Opens the native library, checks it, registers the `native` backend and makes it the active
 * one. Throws {@link NativeLoadError} when the library cannot load or fails its self-check.
 */
export async function startNative(opts: NativeOptions = {}): Promise<NativeInfo> {
  const lib = openNative();
  if (opts.isa) lib.setIsa(opts.isa);
  const want = opts.threads ?? lib.cpus();
  if (!(Number.isInteger(want) && want >= 1)) {
    throw new NativeLoadError(`threads must be an integer >= 1, got ${want}`);
  }
  const threads = lib.setThreads(want);
  lib.setPrecision("fp32");
  selfCheck(lib);
  // auto: bf16 where the CPU multiplies bf16 in hardware, else float32 (emulated bf16 is slower).
  const wanted = opts.precision === "auto"
    ? (lib.bf16Supported() === "bf16-emulated" ? "fp32" : "bf16")
    : opts.precision ?? "fp32";
  const gemm = lib.setPrecision(wanted);
  if (gemm !== "fp32") {
    // 1 + 3 * 2^-8 is a tie between bf16 neighbours: to even, 1 + 2^-6; plus 3, exactly.
    const c = new Float32Array(1), want = 4 + 2 ** -6;
    lib.bmm(
      new Float32Array([1 + 3 * 2 ** -8, 3]),
      new Float32Array([1, 1]),
      c,
      1,
      1,
      2,
      1,
      false,
      false,
      0,
      0,
    );
    if (c[0] !== want) {
      lib.setPrecision("fp32");
      throw new NativeLoadError(
        `the native library failed its ${gemm} self-check (${c[0]} for ${want}): rebuild it ` +
          "with `bash lib/backends/native/build.sh`",
      );
    }
  }
  register(lib);
  // tfjs-backend-cpu prints a "use tfjs-node" banner on first use in Node-like runtimes.
  tf.env().set("IS_NODE", false);
  if (!(await tf.setBackend(NATIVE_BACKEND))) {
    throw new NativeLoadError("the native backend failed to start (see the error above)");
  }
  return { threads, isa: lib.isa(), gemm, path: lib.path };
}
