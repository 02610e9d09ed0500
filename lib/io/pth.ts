/**
 * Reader for PyTorch checkpoints (`torch.save` files: `.pth`, `.pth.tar`, `.pt`), in the zip
 * format PyTorch has written since 1.6: a zip holding `<folder>/data.pkl` (a pickle of the saved
 * object whose tensors point at storages by key), `<folder>/data/<key>` (each storage's raw
 * little-endian bytes) and `<folder>/version`.
 *
 * The pickle is read by a restricted unpickler that runs no code: it accepts only what a tensor
 * checkpoint needs (the globals in {@link ALLOWED_GLOBALS}: `torch._utils._rebuild_tensor_v2`,
 * `_rebuild_parameter`, `collections.OrderedDict`, storages of the float types and integers,
 * plus plain containers, numbers and strings) and refuses any other global with one
 * {@linkcode PthError} naming it, before anything is built. The zip is read with `fflate`.
 *
 * {@link readPth} returns the state dict's tensors in the shape of
 * {@link readSafetensors}'s result: row-major {@linkcode SafeTensor}s (views with offsets and
 * strides, and storages shared between tensors, are copied out element by element), decoded
 * lazily on first access of `data`, so that loading the base encoder of a MoCo v3 checkpoint
 * does not decode its momentum encoder or optimiser state. Storage bytes are not checksummed
 * (neither are safetensors'): a flipped bit inside a tensor changes that tensor's values.
 *
 * @example
 * ```ts
 * import { readPth } from "./pth.ts";
 * import { toFloat32 } from "./safetensors.ts";
 * const { tensors, metadata } = await readPth("vit-s-300ep.pth.tar");
 * metadata.arch; // "vit_small"
 * const w = toFloat32(tensors["module.base_encoder.patch_embed.proj.weight"]); // [384, 3, 16, 16]
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";
import { unzipSync } from "fflate";
import type { SafeDType, SafeTensor, SafetensorsContents } from "./safetensors.ts";

/**
 * A malformed, truncated or refused PyTorch checkpoint; the message names the file and says what
 * to do.
 */
export class PthError extends UserError {
  /** Always `"PthError"`. */
  override name = "PthError";
  /** `message` states the cause; the file is prefixed to it. */
  constructor(source: string, message: string, options?: ErrorOptions) {
    super(`PyTorch checkpoint ${source}: ${message}`, options);
  }
}

/** A storage as the pickle names it: its key in the zip, element type and element count. */
export interface PthStorage {
  /** Key of `<folder>/data/<key>` in the zip. */
  key: string;
  /** Element type (from `torch.FloatStorage` and the like). */
  dtype: SafeDType;
  /** Number of elements. */
  numel: number;
}

/** A tensor as the pickle describes it: a strided view of a storage. */
export class PthTensor {
  /** Wraps `torch._utils._rebuild_tensor_v2`'s arguments (already checked). */
  constructor(
    /** The storage the tensor views. */
    readonly storage: PthStorage,
    /** Element offset of the first element in the storage. */
    readonly offset: number,
    /** Dimensions. */
    readonly shape: number[],
    /** Element strides, one per dimension. */
    readonly stride: number[],
  ) {}
}

/** Storage classes by name, and the dtype of their elements. */
const STORAGES: Record<string, SafeDType> = {
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  DoubleStorage: "F64",
  LongStorage: "I64",
  IntStorage: "I32",
  ByteStorage: "U8",
};

const ELEMENT_BYTES: Record<SafeDType, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  U8: 1,
};

const ARRAYS = {
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  F64: Float64Array,
  I64: BigInt64Array,
  I32: Int32Array,
  U8: Uint8Array,
} as const;

/** A storage class, as a GLOBAL pushes it (only valid inside a persistent id). */
class StorageType {
  constructor(readonly dtype: SafeDType) {}
}

/** A whitelisted callable: what REDUCE (or NEWOBJ) does with its argument tuple. */
type Callable = (args: unknown[], fail: (msg: string) => never) => unknown;

/** An OrderedDict is a dict here; `OrderedDict()` or `OrderedDict([(k, v), ...])`. */
const orderedDict: Callable = (args, fail) => {
  const out = new Map<unknown, unknown>();
  if (args.length === 0) return out;
  if (args.length !== 1 || !Array.isArray(args[0])) fail("OrderedDict takes one list of pairs");
  for (const pair of args[0] as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) fail("OrderedDict takes (key, value) pairs");
    out.set((pair as unknown[])[0], (pair as unknown[])[1]);
  }
  return out;
};

function isCount(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/** `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`. */
const rebuildTensor: Callable = (args, fail) => {
  if (args.length < 6 || args.length > 7) {
    fail(`_rebuild_tensor_v2 takes 6 or 7 arguments, got ${args.length}`);
  }
  const [storage, offset, size, stride] = args;
  if (!(typeof storage === "object" && storage !== null && "key" in storage)) {
    fail("_rebuild_tensor_v2's first argument is not a storage");
  }
  const s = storage as PthStorage;
  if (!isCount(offset)) fail(`tensor offset ${String(offset)} is not a count`);
  if (!Array.isArray(size) || !size.every(isCount)) fail("tensor size is not a tuple of counts");
  if (
    !Array.isArray(stride) || !stride.every(isCount) || stride.length !== (size as number[]).length
  ) {
    fail("tensor stride is not a tuple of counts of the size's length");
  }
  const shape = size as number[];
  const strides = stride as number[];
  if (!shape.includes(0)) {
    let last = offset as number;
    for (let d = 0; d < shape.length; d++) last += (shape[d] - 1) * strides[d];
    if (last >= s.numel) {
      fail(
        `a tensor of size [${shape}] with stride [${strides}] at offset ${offset} reaches ` +
          `element ${last} of storage ${JSON.stringify(s.key)}, which has ${s.numel}`,
      );
    }
  }
  return new PthTensor(s, offset as number, [...shape], [...strides]);
};

/** `_rebuild_parameter(data, requires_grad, hooks)`: the parameter's tensor. */
const rebuildParameter: Callable = (args, fail) => {
  if (args.length !== 3 || !(args[0] instanceof PthTensor)) {
    fail("_rebuild_parameter takes (tensor, requires_grad, hooks)");
  }
  return args[0];
};

/**
 * The globals the unpickler accepts (`module.name`); anything else is refused with its name.
 * Storage classes are `torch.<Type>Storage` for F32, F16, BF16, F64, I64, I32 and U8 elements.
 */
export const ALLOWED_GLOBALS: readonly string[] = [
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "collections.OrderedDict",
  ...Object.keys(STORAGES).map((s) => `torch.${s}`),
];

function lookupGlobal(module: string, name: string): Callable | StorageType | undefined {
  const full = `${module}.${name}`;
  if (full === "torch._utils._rebuild_tensor_v2") return rebuildTensor;
  if (full === "torch._utils._rebuild_parameter") return rebuildParameter;
  if (full === "collections.OrderedDict") return orderedDict;
  if (module === "torch" && Object.hasOwn(STORAGES, name)) return new StorageType(STORAGES[name]);
  return undefined;
}

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /** Names the file in errors. */
  source?: string;
  /** Resolves a persistent id (BINPERSID); without it a persistent id is an error. */
  persistentLoad?: (pid: unknown) => unknown;
}

const MARK = Symbol("mark");

/**
 * Decodes a pickle (protocols 2 to 5, as `torch.save` writes them) into plain values: dicts as
 * `Map`, lists and tuples as arrays, `None` as `null`, ints as numbers (`bigint` beyond 2^53),
 * strings, booleans, bytes as `Uint8Array`, tensors as {@link PthTensor}. Runs no code: a global
 * outside {@link ALLOWED_GLOBALS} is refused with a {@linkcode PthError} naming it.
 *
 * @example
 * ```ts
 * // pickle.dumps({"a": 1}, protocol=2)
 * const bytes = new Uint8Array([0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x71, 1, 0x4b, 1, 0x73, 0x2e]);
 * unpickle(bytes); // Map { "a" => 1 }
 * ```
 */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions = {}): unknown {
  const source = opts.source ?? "<pickle>";
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = new TextDecoder("utf-8", { fatal: true });
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  const fail = (msg: string): never => {
    throw new PthError(
      source,
      `${msg} (pickle byte ${pos}); the file is corrupt or not a ` +
        "tensor checkpoint",
    );
  };
  const need = (n: number) => {
    if (pos + n > bytes.length) fail("the pickle ends early");
  };
  const u8 = () => (need(1), bytes[pos++]);
  const u16 = () => (need(2), pos += 2, view.getUint16(pos - 2, true));
  const u32 = () => (need(4), pos += 4, view.getUint32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(bytes.length)) fail(`length ${v} runs past the end of the pickle`);
    return Number(v);
  };
  const take = (n: number) => (need(n), pos += n, bytes.subarray(pos - n, pos));
  const str = (n: number) => {
    const b = take(n);
    try {
      return text.decode(b);
    } catch {
      return fail("a string is not valid UTF-8");
    }
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail("the pickle ends early");
    const s = new TextDecoder().decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail("stack underflow");
    const v = stack.pop();
    if (v === MARK) fail("unexpected mark");
    return v;
  };
  const top = (): unknown => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) fail("stack underflow");
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) fail("no mark on the stack");
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const pushGlobal = (module: string, name: string) => {
    const g = lookupGlobal(module, name);
    if (g === undefined) {
      throw new PthError(
        source,
        `refusing the global ${module}.${name}: only tensor checkpoints are read (allowed: ` +
          `torch tensors and storages, OrderedDict, plain containers); load it in Python and ` +
          "save its state_dict with torch.save",
      );
    }
    stack.push(g);
  };
  const signedLE = (b: Uint8Array): number | bigint => {
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b.length && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(v)
      : v;
  };
  const setItems = (dict: unknown, items: unknown[]) => {
    if (!(dict instanceof Map)) fail("SETITEM(S) on something that is not a dict");
    if (items.length % 2) fail("SETITEMS with an odd number of items");
    for (let i = 0; i < items.length; i += 2) {
      (dict as Map<unknown, unknown>).set(items[i], items[i + 1]);
    }
  };
  const append = (list: unknown, items: unknown[]) => {
    if (!Array.isArray(list)) fail("APPEND(S) on something that is not a list");
    for (const x of items) (list as unknown[]).push(x);
  };
  const call = (f: unknown, args: unknown) => {
    if (typeof f !== "function") fail("REDUCE on something that is not an allowed callable");
    if (!Array.isArray(args)) fail("REDUCE with arguments that are not a tuple");
    stack.push((f as Callable)(args as unknown[], fail));
  };

  while (true) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("pickle protocol above 5");
        break;
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) fail(`STOP with ${stack.length} items on the stack`);
        return pop();
      case 0x63: { // GLOBAL "module\nname\n"
        const module = line();
        pushGlobal(module, line());
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof name !== "string" || typeof module !== "string") fail("bad STACK_GLOBAL");
        pushGlobal(module as string, name as string);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`memo entry ${i} is missing`);
        stack.push(memo.get(i));
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x74: // TUPLE
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x64: { // DICT
        const d = new Map();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop(), a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x73: { // SETITEM
        const v = pop(), k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x4a: // BININT
        need(4);
        stack.push(view.getInt32(pos, true));
        pos += 4;
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(signedLE(take(u8())));
        break;
      case 0x8b: { // LONG4
        const n = u32();
        if (n > 64) fail(`a ${n}-byte integer`);
        stack.push(signedLE(take(n)));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(take(u8()).slice());
        break;
      case 0x42: // BINBYTES
        stack.push(take(u32()).slice());
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x30: // POP
        if (stack.pop() === undefined) fail("stack underflow");
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x52: // REDUCE
      case 0x81: { // NEWOBJ
        const args = pop();
        call(pop(), args);
        break;
      }
      case 0x62: { // BUILD: state on a dict is torch's state_dict._metadata, dropped
        const state = pop();
        const target = top();
        if (!(target instanceof Map) || !(state === null || state instanceof Map)) {
          fail("BUILD on something other than a dict");
        }
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) fail("a persistent id outside a checkpoint");
        stack.push(opts.persistentLoad!(pid));
        break;
      }
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")}`);
    }
  }
}

/**
 * A decoded checkpoint: the unpickled object ({@link unpickle}'s values) and a way to read a
 * tensor's values.
 */
export interface PthCheckpoint {
  /** The object `torch.save` saved. */
  root: unknown;
  /** A tensor's values, row-major, in a fresh array of its dtype's type. */
  read(t: PthTensor): SafeTensor;
}

/**
 * Decodes the bytes of a `torch.save` zip file. Throws {@linkcode PthError} for a file that is
 * not one (a truncated zip, the pre-1.6 format, a TorchScript archive, a storage whose size does
 * not match) or whose pickle names a global outside {@link ALLOWED_GLOBALS}.
 *
 * @example
 * ```ts
 * const ckpt = decodePth(await Deno.readFile("w.pth"), "w.pth");
 * const sd = ckpt.root as Map<string, PthTensor>;
 * const w = ckpt.read(sd.get("weight")!); // { dtype: "F32", shape, data }
 * ```
 */
export function decodePth(bytes: Uint8Array, source = "<bytes>"): PthCheckpoint {
  const isZip = bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b &&
    bytes[2] === 0x03 && bytes[3] === 0x04;
  if (!isZip) {
    const legacy = bytes.length > 2 && bytes[0] === 0x80 && bytes[1] <= 5;
    throw new PthError(
      source,
      legacy
        ? "this is PyTorch's legacy (pre-1.6) format, which is not read here: re-save it with " +
          "torch.save(torch.load(f), g) in PyTorch 1.6 or later"
        : "not a PyTorch zip checkpoint (no zip signature); is it a safetensors file or " +
          "damaged? Copy or download it again",
    );
  }
  const entries = new Map<string, number>();
  const unzip = (want: (name: string) => boolean): Record<string, Uint8Array> => {
    try {
      return unzipSync(bytes, {
        filter: (f) => {
          entries.set(f.name, f.originalSize);
          return want(f.name);
        },
      });
    } catch (e) {
      throw new PthError(
        source,
        `the zip cannot be read (${(e as Error).message}): the file is truncated or ` +
          "damaged (often an interrupted copy or download); copy or download it again",
        { cause: e },
      );
    }
  };
  const first = unzip((name) => /^[^/]+\/(data\.pkl|byteorder)$/.test(name));
  const pklName = Object.keys(first).find((n) => n.endsWith("/data.pkl"));
  if (!pklName) {
    const script = [...entries.keys()].some((n) => /^[^/]+\/(constants\.pkl|code\/)/.test(n));
    throw new PthError(
      source,
      script
        ? "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint: save " +
          "the model's state_dict with torch.save"
        : "the zip holds no <folder>/data.pkl; it is not a torch.save checkpoint",
    );
  }
  const folder = pklName.slice(0, -"data.pkl".length);
  const order = first[`${folder}byteorder`];
  if (order && new TextDecoder().decode(order).trim() !== "little") {
    throw new PthError(source, "big-endian checkpoints are not read here; re-save on x86/ARM");
  }
  const storages = new Map<string, PthStorage>();
  const persistentLoad = (pid: unknown): PthStorage => {
    const bad = (msg: string): never => {
      throw new PthError(source, `${msg}; the file is corrupt or not a tensor checkpoint`);
    };
    if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== "storage") {
      bad("a persistent id that is not ('storage', type, key, location, numel)");
    }
    const [, type, key, , numel] = pid as unknown[];
    if (!(type instanceof StorageType)) bad("a storage whose type is not a storage class");
    if (typeof key !== "string" || !isCount(numel)) bad("a storage with a bad key or size");
    const k = key as string;
    const st = storages.get(k);
    if (st) return st;
    const dtype = (type as StorageType).dtype;
    const size = entries.get(`${folder}data/${k}`);
    const expected = (numel as number) * ELEMENT_BYTES[dtype];
    if (size === undefined) bad(`storage ${JSON.stringify(k)} is missing from the zip`);
    if (size !== expected) {
      bad(
        `storage ${JSON.stringify(k)} holds ${size} bytes but ${numel} ${dtype} elements ` +
          `need ${expected}`,
      );
    }
    const made = { key: k, dtype, numel: numel as number };
    storages.set(k, made);
    return made;
  };
  const root = unpickle(first[pklName], { source, persistentLoad });
  const read = (t: PthTensor): SafeTensor => {
    const name = `${folder}data/${t.storage.key}`;
    const raw = unzip((n) => n === name)[name];
    const size = ELEMENT_BYTES[t.storage.dtype];
    if (!raw || raw.length !== t.storage.numel * size) {
      throw new PthError(source, `storage ${t.storage.key} cannot be read; the file is damaged`);
    }
    const Array_ = ARRAYS[t.storage.dtype];
    const src = new Array_(raw.buffer as ArrayBuffer, raw.byteOffset, t.storage.numel);
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.offset === 0 && n === t.storage.numel && isContiguous(t.shape, t.stride)) {
      // The whole storage, in order: `raw` is a fresh copy, so the tensor may own it.
      return { dtype: t.storage.dtype, shape: [...t.shape], data: src };
    }
    const out = new Array_(n);
    if (isContiguous(t.shape, t.stride)) {
      // deno-lint-ignore no-explicit-any
      (out as any).set(src.subarray(t.offset, t.offset + n));
    } else {
      // Odometer over the indices, row-major, following the strides.
      const idx = new Array(t.shape.length).fill(0);
      let at = t.offset;
      for (let i = 0; i < n; i++) {
        out[i] = src[at];
        for (let d = t.shape.length - 1; d >= 0; d--) {
          if (++idx[d] < t.shape[d]) {
            at += t.stride[d];
            break;
          }
          at -= (t.shape[d] - 1) * t.stride[d];
          idx[d] = 0;
        }
      }
    }
    return { dtype: t.storage.dtype, shape: [...t.shape], data: out };
  };
  return { root, read };
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expect = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expect) return false;
    expect *= shape[d];
  }
  return true;
}

/** Where a checkpoint keeps its weights: `state_dict` (MoCo v3, timm), `model` (DeiT, MAE). */
const STATE_KEYS = ["state_dict", "model"];

/**
 * The state dict of a decoded checkpoint: `root.state_dict` or `root.model` when present, else
 * the root itself; its tensors by name (non-tensor entries skipped), and the root's string and
 * number entries (`arch`, `epoch`) as metadata strings.
 */
export function stateDict(ckpt: PthCheckpoint, source = "<bytes>"): SafetensorsContents {
  const { root } = ckpt;
  if (!(root instanceof Map)) {
    throw new PthError(
      source,
      "the saved object is not a dict; save a state_dict (or a dict holding one)",
    );
  }
  const metadata: Record<string, string> = {};
  let dict = root;
  for (const key of STATE_KEYS) {
    if (root.get(key) instanceof Map) {
      dict = root.get(key);
      break;
    }
  }
  if (dict !== root) {
    for (const [k, v] of root) {
      if (typeof k === "string" && ["string", "number"].includes(typeof v)) {
        metadata[k] = String(v);
      }
    }
  }
  const tensors: Record<string, SafeTensor> = {};
  for (const [k, v] of dict) {
    if (typeof k !== "string" || !(v instanceof PthTensor)) continue;
    let data: SafeTensor["data"] | undefined;
    const t = v;
    Object.defineProperty(tensors, k, {
      enumerable: true,
      writable: true,
      configurable: true,
      value: {
        dtype: t.storage.dtype,
        shape: [...t.shape],
        get data() {
          return data ??= ckpt.read(t).data;
        },
      },
    });
  }
  if (Object.keys(tensors).length === 0) {
    throw new PthError(source, "the checkpoint holds no tensors under string names");
  }
  return { tensors, metadata };
}

/**
 * Reads a `torch.save` checkpoint's state dict (see {@link stateDict}) in the shape of
 * {@link readSafetensors}'s result; each tensor's `data` is decoded on first access. Throws
 * {@linkcode PthError} naming `path` for a missing, truncated, damaged or refused file.
 *
 * @example
 * ```ts
 * const { tensors, metadata } = await readPth("vit-s-300ep.pth.tar"); // metadata.arch, .epoch
 * ```
 */
export async function readPth(path: string): Promise<SafetensorsContents> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "file not found; check the path"
      : `cannot read file: ${(e as Error).message}`;
    throw new PthError(path, why, { cause: e });
  }
  return stateDict(decodePth(bytes, path), path);
}
