/**
 * Reader and writer for the safetensors format (the format of timm / Hugging Face checkpoints).
 *
 * Layout: an 8-byte little-endian u64 header length `N`, then `N` bytes of JSON header
 * `{"<name>": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}` padded
 * with spaces to a multiple of 8, then the data section: every tensor's little-endian bytes,
 * packed contiguously; offsets are relative to the start of the data section.
 *
 * Decoding validates everything before it allocates or copies, so a corrupt or hostile file
 * gives a {@linkcode SafetensorsError} naming the file and the tensor, never a crash or a huge
 * allocation. Decoded tensors own their memory (copied out of the file bytes, hence aligned).
 *
 * @example
 * ```ts
 * import { readSafetensors, toFloat32, writeSafetensors } from "./safetensors.ts";
 * await writeSafetensors("/tmp/w.safetensors", {
 *   "head.weight": { dtype: "F32", shape: [2, 3], data: new Float32Array(6) },
 * }, { format: "pt" });
 * const { tensors, metadata } = await readSafetensors("/tmp/w.safetensors");
 * const w = toFloat32(tensors["head.weight"]); // Float32Array(6), row-major [2, 3]
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";
import { type AtomicWriteOptions, writeFileAtomic } from "./atomic.ts";

/** Element types supported here (a subset of the safetensors dtypes). */
export type SafeDType = "F32" | "F16" | "BF16" | "I32" | "I64" | "U8" | "F64";

/**
 * One tensor: row-major data of `product(shape)` elements. The array type follows the dtype:
 * F32 `Float32Array`, F64 `Float64Array`, I32 `Int32Array`, I64 `BigInt64Array`, U8 `Uint8Array`,
 * F16 and BF16 `Uint16Array` holding the raw 16-bit patterns (convert with {@linkcode toFloat32}).
 */
export interface SafeTensor {
  /** Element type as written in the file. */
  dtype: SafeDType;
  /** Dimensions, row-major (`[]` for a scalar). */
  shape: number[];
  /** `product(shape)` elements, little-endian in the file, native order here. */
  data: Float32Array | Int32Array | Uint8Array | BigInt64Array | Float64Array | Uint16Array;
}

/** A decoded file: tensors in header order, and the `__metadata__` string map (`{}` if absent). */
export interface SafetensorsContents {
  /** Tensors by name, in header order. */
  tensors: Record<string, SafeTensor>;
  /** The `__metadata__` map, `{}` when the file has none. */
  metadata: Record<string, string>;
}

/**
 * A malformed safetensors file (or invalid input to the encoder). `source` is the file path (or
 * `"<bytes>"`, `"<encode>"`), `tensor` the offending tensor name when one is at fault.
 */
export class SafetensorsError extends UserError {
  /** Always `"SafetensorsError"`. */
  override name = "SafetensorsError";
  /** The file (or pseudo-source) at fault. */
  readonly source: string;
  /** The tensor at fault, if any. */
  readonly tensor?: string;

  /** `message` states the cause; the source and tensor are prefixed to it. */
  constructor(source: string, message: string, tensor?: string, options?: ErrorOptions) {
    const where = tensor === undefined ? source : `${source}: tensor ${JSON.stringify(tensor)}`;
    super(`safetensors ${where}: ${message}`, options);
    this.source = source;
    this.tensor = tensor;
  }
}

/** Headers larger than this are rejected (same limit as the reference Rust implementation). */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = "__metadata__";

/** Bytes per element and the typed-array constructor for each dtype. */
const DTYPES = {
  F32: { size: 4, array: Float32Array },
  F64: { size: 8, array: Float64Array },
  F16: { size: 2, array: Uint16Array },
  BF16: { size: 2, array: Uint16Array },
  I32: { size: 4, array: Int32Array },
  I64: { size: 8, array: BigInt64Array },
  U8: { size: 1, array: Uint8Array },
} as const;

function isDType(s: unknown): s is SafeDType {
  return typeof s === "string" && Object.hasOwn(DTYPES, s);
}

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Reverses each `size`-byte group in place (only used on big-endian hosts). */
function swapBytes(bytes: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i + size <= bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

/** Defines `obj[key] = value` as an own property, safe for keys such as `"__proto__"`. */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Product of `shape`, or `Infinity` if it exceeds 2^53 (so size checks fail cleanly). */
function numElements(shape: readonly number[]): number {
  if (shape.includes(0)) return 0;
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (n > Number.MAX_SAFE_INTEGER) return Infinity;
  }
  return n;
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/**
 * Encodes tensors (packed in insertion order) and optional string metadata into safetensors
 * bytes. Throws {@linkcode SafetensorsError} (source `"<encode>"`) if a tensor's array type or
 * length does not match its dtype and shape. Note that JS objects list integer-like keys
 * (`"0"`, `"1"`) first, whatever the insertion order.
 *
 * @example
 * ```ts
 * const bytes = encodeSafetensors({ b: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) } });
 * ```
 */
export function encodeSafetensors(
  tensors: Record<string, SafeTensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const src = "<encode>";
  const parts: string[] = [];
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new SafetensorsError(
          src,
          `metadata value for key ${JSON.stringify(k)} is ${typeof v}; safetensors metadata ` +
            `must map strings to strings (use JSON.stringify for structured values)`,
        );
      }
    }
    parts.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(metadata)}`);
  }
  const entries = Object.entries(tensors);
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === METADATA_KEY) {
      throw new SafetensorsError(src, `the name ${METADATA_KEY} is reserved for metadata`, name);
    }
    if (!isDType(t.dtype)) {
      throw new SafetensorsError(
        src,
        `unsupported dtype ${JSON.stringify(t.dtype)}; expected one of ${
          Object.keys(DTYPES).join(", ")
        }`,
        name,
      );
    }
    const spec = DTYPES[t.dtype];
    if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) {
      throw new SafetensorsError(
        src,
        `shape ${JSON.stringify(t.shape)} must be an array of non-negative integers`,
        name,
      );
    }
    if (!(t.data instanceof spec.array)) {
      throw new SafetensorsError(
        src,
        `dtype ${t.dtype} needs data as ${spec.array.name}, got ${t.data?.constructor?.name}`,
        name,
      );
    }
    const n = numElements(t.shape);
    if (t.data.length !== n) {
      throw new SafetensorsError(
        src,
        `shape [${t.shape}] has ${n} elements but data has ${t.data.length}`,
        name,
      );
    }
    const end = offset + t.data.byteLength;
    parts.push(
      `${JSON.stringify(name)}:${
        JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [offset, end] })
      }`,
    );
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const headerLen = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLen + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  let pos = 8 + headerLen;
  for (const [, t] of entries) {
    const raw = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    out.set(raw, pos);
    if (!LITTLE_ENDIAN_HOST) swapBytes(out.subarray(pos, pos + raw.length), DTYPES[t.dtype].size);
    pos += raw.length;
  }
  return out;
}

interface Entry {
  name: string;
  dtype: SafeDType;
  shape: number[];
  begin: number;
  end: number;
}

/** Checks one header entry against the spec and the data-section size. */
function parseEntry(source: string, name: string, info: unknown, dataLen: number): Entry {
  const fail = (msg: string) => new SafetensorsError(source, msg, name);
  if (typeof info !== "object" || info === null || Array.isArray(info)) {
    throw fail(`header entry must be an object {dtype, shape, data_offsets}, got ${typeOf(info)}`);
  }
  const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
  if (!isDType(dtype)) {
    throw fail(
      `unsupported dtype ${short(dtype)}; expected one of ${Object.keys(DTYPES).join(", ")}`,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
    throw fail(`shape ${short(shape)} must be an array of non-negative integers`);
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 || !isNonNegInt(offsets[0]) ||
    !isNonNegInt(offsets[1])
  ) {
    throw fail(`data_offsets ${short(offsets)} must be [begin, end], non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw fail(`data_offsets [${begin}, ${end}] has begin > end`);
  if (end > dataLen) {
    throw fail(
      `data_offsets [${begin}, ${end}] run past the data section (${dataLen} bytes); ` +
        `the file is truncated or corrupt`,
    );
  }
  const expected = numElements(shape) * DTYPES[dtype].size;
  if (end - begin !== expected) {
    throw fail(
      `data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${shape}] of ` +
        `${dtype} needs ${expected} bytes`,
    );
  }
  return { name, dtype, shape: [...shape], begin, end };
}

function typeOf(x: unknown): string {
  return x === null ? "null" : Array.isArray(x) ? "array" : typeof x;
}

/** JSON of `x`, cut to a readable length for error messages. */
function short(x: unknown): string {
  const s = x === undefined ? "undefined" : JSON.stringify(x) ?? String(x);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Decodes safetensors bytes. `source` names the file in error messages. Throws
 * {@linkcode SafetensorsError} for any malformed input: short file, header length past the end
 * of the file or over {@linkcode MAX_HEADER_BYTES}, bad UTF-8 or JSON, unknown dtype, bad shape,
 * offsets out of range, size mismatch, overlapping tensors, gaps or trailing bytes (the reference
 * implementation also requires the data section to be exactly covered).
 *
 * @example
 * ```ts
 * const { tensors, metadata } = decodeSafetensors(await Deno.readFile("m.safetensors"), "m.safetensors");
 * ```
 */
export function decodeSafetensors(bytes: Uint8Array, source = "<bytes>"): SafetensorsContents {
  if (bytes.length < 8) {
    throw new SafetensorsError(
      source,
      `file is ${bytes.length} bytes, too short for the 8-byte header length; truncated?`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLenBig = view.getBigUint64(0, true);
  if (headerLenBig > BigInt(bytes.length - 8)) {
    throw new SafetensorsError(
      source,
      `header length ${headerLenBig} exceeds the ${bytes.length - 8} bytes after the length ` +
        `field; the file is truncated or not a safetensors file`,
    );
  }
  if (headerLenBig > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      source,
      `header length ${headerLenBig} exceeds the limit of ${MAX_HEADER_BYTES} bytes`,
    );
  }
  const headerLen = Number(headerLenBig);
  const dataStart = 8 + headerLen;
  const dataLen = bytes.length - dataStart;

  let header: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, dataStart));
    header = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(
      source,
      `header (${headerLen} bytes) is not valid UTF-8 JSON: ${(e as Error).message}`,
      undefined,
      { cause: e },
    );
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new SafetensorsError(source, `header must be a JSON object, got ${typeOf(header)}`);
  }

  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      if (typeof info !== "object" || info === null || Array.isArray(info)) {
        throw new SafetensorsError(
          source,
          `${METADATA_KEY} must be an object, got ${typeOf(info)}`,
        );
      }
      for (const [k, v] of Object.entries(info)) {
        if (typeof v !== "string") {
          throw new SafetensorsError(
            source,
            `${METADATA_KEY} value for key ${JSON.stringify(k)} must be a string, got ${typeOf(v)}`,
          );
        }
        setOwn(metadata, k, v);
      }
    } else {
      entries.push(parseEntry(source, name, info, dataLen));
    }
  }

  // The tensors must tile the data section exactly: no overlap, no gap, nothing left over.
  const byOffset = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let prev: Entry | undefined;
  for (const e of byOffset) {
    if (e.begin < covered) {
      throw new SafetensorsError(
        source,
        `data_offsets [${e.begin}, ${e.end}] overlap tensor ${JSON.stringify(prev?.name)} ` +
          `[${prev?.begin}, ${prev?.end}]`,
        e.name,
      );
    }
    if (e.begin > covered) {
      throw new SafetensorsError(
        source,
        `data_offsets [${e.begin}, ${e.end}] leave a gap: bytes ${covered}..${e.begin} of the ` +
          `data section belong to no tensor`,
        e.name,
      );
    }
    covered = e.end;
    prev = e;
  }
  if (covered !== dataLen) {
    throw new SafetensorsError(
      source,
      `data section is ${dataLen} bytes but the tensors cover only ${covered}; ` +
        `${dataLen - covered} trailing bytes belong to no tensor`,
    );
  }

  const tensors: Record<string, SafeTensor> = {};
  for (const e of entries) {
    // slice() copies into a fresh, aligned buffer: no misaligned views, no aliasing of `bytes`.
    const raw = bytes.slice(dataStart + e.begin, dataStart + e.end);
    const spec = DTYPES[e.dtype];
    if (!LITTLE_ENDIAN_HOST) swapBytes(raw, spec.size);
    const data = new spec.array(raw.buffer, 0, raw.length / spec.size);
    setOwn(tensors, e.name, { dtype: e.dtype, shape: e.shape, data });
  }
  return { tensors, metadata };
}

/**
 * Encodes and atomically writes a safetensors file (see {@linkcode encodeSafetensors}).
 * `options.writer` replaces the write (tests simulate a full disk with it).
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, SafeTensor>,
  metadata?: Record<string, string>,
  options: AtomicWriteOptions = {},
): Promise<void> {
  await writeFileAtomic(path, encodeSafetensors(tensors, metadata), options);
}

/**
 * Reads and decodes a safetensors file. Throws {@linkcode SafetensorsError} naming `path` if the
 * file is missing, unreadable or malformed.
 */
export async function readSafetensors(path: string): Promise<SafetensorsContents> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "file not found; check the path (is the checkpoint where you expect?)"
      : `cannot read file: ${(e as Error).message}`;
    throw new SafetensorsError(path, why, undefined, { cause: e });
  }
  try {
    return decodeSafetensors(bytes, path);
  } catch (e) {
    if (e instanceof SafetensorsError) {
      e.message += ". The file is damaged (often an interrupted copy or download): copy or " +
        "download it again, or re-create it";
    }
    throw e;
  }
}

let f16Table: Float32Array | undefined;

/** All 65536 half-precision values as f32, built once from their bit fields (exact, NaN payloads kept). */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) {
      bits[h] = sign | 0x7f800000 | (mant << 13); // inf / NaN
    } else if (exp !== 0) {
      bits[h] = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    } else if (mant === 0) {
      bits[h] = sign; // +-0
    } else {
      // Subnormal half: normalise, as f32 has the range to represent it as a normal number.
      let e = -14;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      bits[h] = sign | ((e + 127) << 23) | ((mant & 0x3ff) << 13);
    }
  }
  f16Table = new Float32Array(bits.buffer);
  return f16Table;
}

/**
 * Converts a float tensor's data to `Float32Array` (row-major, `product(shape)` elements):
 * F16 and BF16 exactly, F64 rounded to nearest. For F32 it returns `t.data` itself (no copy).
 * Throws a `TypeError` for integer dtypes, which are not weights.
 *
 * @example
 * ```ts
 * toFloat32({ dtype: "BF16", shape: [1], data: new Uint16Array([0x3f80]) }); // Float32Array [1]
 * ```
 */
export function toFloat32(t: SafeTensor): Float32Array {
  switch (t.dtype) {
    case "F32":
      return t.data as Float32Array;
    case "F64":
      return Float32Array.from(t.data as Float64Array);
    case "F16": {
      const table = halfTable();
      const src = t.data as Uint16Array;
      const out = new Uint32Array(src.length);
      const tableBits = new Uint32Array(table.buffer);
      for (let i = 0; i < src.length; i++) out[i] = tableBits[src[i]];
      return new Float32Array(out.buffer);
    }
    case "BF16": {
      const src = t.data as Uint16Array;
      const out = new Uint32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
      return new Float32Array(out.buffer);
    }
    default:
      throw new TypeError(
        `toFloat32: dtype ${t.dtype} is an integer type; expected F32, F16, BF16 or F64`,
      );
  }
}
