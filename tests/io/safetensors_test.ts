import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import fc from "fast-check";
import {
  decodeSafetensors,
  encodeSafetensors,
  MAX_HEADER_BYTES,
  readSafetensors,
  type SafeDType,
  type SafeTensor,
  SafetensorsError,
  toFloat32,
  writeSafetensors,
} from "../../lib/io/safetensors.ts";
import { listDir } from "../_helpers/temp.ts";

// ---------------------------------------------------------------------------------------------
// Helpers written from the spec, independent of the module under test.

const enc = new TextEncoder();

/** u64 LE header length + header text (no padding added) + raw data bytes. */
function buildFile(header: string, data: Uint8Array, headerLenOverride?: bigint): Uint8Array {
  const h = enc.encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLenOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** A parsed header: tensor entries and `__metadata__`. */
type Header = Record<string, Record<string, unknown>>;

/** The header of an encoded file, parsed by hand. */
function readHeader(bytes: Uint8Array): { len: number; text: string; json: Header } {
  const len = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + len));
  return { len, text, json: JSON.parse(text) };
}

/** Raw bytes of a typed array (for bit-exact comparisons). */
function rawBytes(a: ArrayBufferView): number[] {
  return Array.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
}

/** Elements of any tensor data as a plain array. */
function vals(a: SafeTensor["data"]): (number | bigint)[] {
  return Array.from(a as ArrayLike<number | bigint>);
}

function f32Bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

/** Asserts `fn` throws a SafetensorsError whose message contains every `parts` string. */
function assertSafeError(fn: () => unknown, ...parts: string[]): SafetensorsError {
  const e = assertThrows(fn, SafetensorsError);
  for (const p of parts) assertStringIncludes(e.message, p);
  return e as SafetensorsError;
}

const entry = (dtype: string, shape: unknown, offsets: unknown) => ({
  dtype,
  shape,
  data_offsets: offsets,
});

// ---------------------------------------------------------------------------------------------
// Decoding a file built by hand from the spec.

Deno.test("decode: hand-built file with misaligned data gives the right values", () => {
  // Header length 1 + 8k + ... is deliberately not a multiple of 8, so the data section starts at
  // an odd offset; the typed arrays must still come out aligned and correct.
  const header = JSON.stringify({
    __metadata__: { format: "pt", note: "héllo" },
    w: entry("F32", [2, 2], [0, 16]),
    idx: entry("I32", [3], [16, 28]),
    big: entry("I64", [2], [28, 44]),
    d: entry("F64", [1], [44, 52]),
    u: entry("U8", [3], [52, 55]),
    h: entry("F16", [2], [55, 59]),
  }) + " "; // odd trailing padding is legal when reading
  const data = new Uint8Array(59);
  const dv = new DataView(data.buffer);
  [1.5, -2.25, 0.1, 1e30].forEach((v, i) => dv.setFloat32(4 * i, v, true));
  [7, -1, 2147483647].forEach((v, i) => dv.setInt32(16 + 4 * i, v, true));
  dv.setBigInt64(28, -5n, true);
  dv.setBigInt64(36, 9007199254740993n, true); // 2^53 + 1, not representable as a double
  dv.setFloat64(44, Math.PI, true);
  data.set([0, 128, 255], 52);
  dv.setUint16(55, 0x3c00, true);
  dv.setUint16(57, 0xc000, true);

  const file = buildFile(header, data);
  assert((8 + enc.encode(header).length) % 4 !== 0, "test must exercise a misaligned data section");
  // Also hand the decoder a view at an odd byte offset into a bigger buffer.
  const host = new Uint8Array(file.length + 3);
  host.set(file, 3);
  const { tensors, metadata } = decodeSafetensors(host.subarray(3), "hand.safetensors");

  assertEquals(metadata, { format: "pt", note: "héllo" });
  assertEquals(Object.keys(tensors), ["w", "idx", "big", "d", "u", "h"]);
  const w = tensors.w;
  assertEquals(w.dtype, "F32");
  assertEquals(w.shape, [2, 2]);
  assertInstanceOf(w.data, Float32Array);
  assertEquals(vals(w.data), [1.5, -2.25, Math.fround(0.1), Math.fround(1e30)]);
  assertInstanceOf(tensors.idx.data, Int32Array);
  assertEquals(vals(tensors.idx.data), [7, -1, 2147483647]);
  assertInstanceOf(tensors.big.data, BigInt64Array);
  assertEquals(vals(tensors.big.data), [-5n, 9007199254740993n]);
  assertInstanceOf(tensors.d.data, Float64Array);
  assertEquals(tensors.d.data[0], Math.PI);
  assertEquals(vals(tensors.u.data), [0, 128, 255]);
  assertInstanceOf(tensors.h.data, Uint16Array);
  assertEquals(vals(tensors.h.data), [0x3c00, 0xc000]);
  assertEquals(Array.from(toFloat32(tensors.h)), [1, -2]);
  // Decoded tensors own their memory: changing the file bytes does not change them.
  host.fill(0);
  assertEquals(tensors.w.data[0], 1.5);
});

Deno.test("decode: tensor order in the header need not match offset order; no metadata -> {}", () => {
  const header = JSON.stringify({ b: entry("F32", [1], [4, 8]), a: entry("F32", [1], [0, 4]) });
  const data = new Uint8Array(8);
  new DataView(data.buffer).setFloat32(0, 3, true);
  new DataView(data.buffer).setFloat32(4, 4, true);
  const { tensors, metadata } = decodeSafetensors(buildFile(header, data));
  assertEquals(metadata, {});
  assertEquals(tensors.a.data[0], 3);
  assertEquals(tensors.b.data[0], 4);
});

// ---------------------------------------------------------------------------------------------
// Encoding.

Deno.test("encode: exact bytes of a one-tensor file match the spec", () => {
  const bytes = encodeSafetensors({ x: { dtype: "F32", shape: [1], data: new Float32Array([1]) } });
  const json = '{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'; // 54 chars
  const padded = json + " ".repeat(2); // to 56, a multiple of 8
  const expected = [56, 0, 0, 0, 0, 0, 0, 0, ...enc.encode(padded), 0x00, 0x00, 0x80, 0x3f];
  assertEquals(Array.from(bytes), expected);
});

Deno.test("encode: insertion order, contiguous packing, padded header, metadata first", () => {
  const bytes = encodeSafetensors({
    "blocks.0.attn.qkv.weight": { dtype: "F32", shape: [2, 3], data: new Float32Array(6) },
    "cls_token": { dtype: "F16", shape: [1, 1, 3], data: new Uint16Array(3) },
    "pos_embed": { dtype: "U8", shape: [5], data: new Uint8Array(5) },
    "a_scalar": { dtype: "F64", shape: [], data: new Float64Array(1) },
  }, { epoch: "3" });
  const { len, text, json } = readHeader(bytes);
  assertEquals(len % 8, 0);
  assertEquals(text.trimEnd().length + (len - text.trimEnd().length), len);
  assert(/^ *$/.test(text.slice(text.lastIndexOf("}") + 1)), "padding must be spaces");
  assertEquals(Object.keys(json), [
    "__metadata__",
    "blocks.0.attn.qkv.weight",
    "cls_token",
    "pos_embed",
    "a_scalar",
  ]);
  assertEquals(json.__metadata__, { epoch: "3" });
  assertEquals(json["blocks.0.attn.qkv.weight"].data_offsets, [0, 24]);
  assertEquals(json.cls_token.data_offsets, [24, 30]);
  assertEquals(json.pos_embed.data_offsets, [30, 35]);
  assertEquals(json.a_scalar, { dtype: "F64", shape: [], data_offsets: [35, 43] });
  assertEquals(bytes.length, 8 + len + 43);
});

Deno.test("round trip: bit-exact for -0, denormals, inf, NaN payloads, every dtype", () => {
  const f32 = new Float32Array(
    new Uint32Array([
      0x80000000, // -0
      0x00000001, // smallest denormal
      0x807fffff, // largest negative denormal
      0x7f800000, // +inf
      0x7fc00001, // quiet NaN with payload
      0xffa00005, // signalling-looking negative NaN with payload
      0x3f800000, // 1
    ]).buffer,
  );
  const f64 = new Float64Array([-0, 5e-324, -Number.MAX_VALUE, Infinity, 0.1]);
  const i64 = new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 0n]);
  const tensors: Record<string, SafeTensor> = {
    f32: { dtype: "F32", shape: [7], data: f32 },
    f64: { dtype: "F64", shape: [5, 1], data: f64 },
    i32: { dtype: "I32", shape: [2], data: new Int32Array([-2147483648, 2147483647]) },
    i64: { dtype: "I64", shape: [3], data: i64 },
    u8: { dtype: "U8", shape: [2, 2], data: new Uint8Array([0, 1, 254, 255]) },
    f16: { dtype: "F16", shape: [3], data: new Uint16Array([0x8000, 0x0001, 0x7e01]) },
    bf16: { dtype: "BF16", shape: [2], data: new Uint16Array([0x3f80, 0xffc1]) },
    empty: { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
    scalar: { dtype: "F32", shape: [], data: new Float32Array([2.5]) },
    "ünï.cödé": { dtype: "U8", shape: [1], data: new Uint8Array([9]) },
  };
  // "__proto__" as an own key (object literal syntax would set the prototype instead).
  Object.defineProperty(tensors, "__proto__", {
    value: { dtype: "U8", shape: [1], data: new Uint8Array([42]) },
    enumerable: true,
  });
  const metadata = { format: "pt", config: JSON.stringify({ depth: 12, "é": [1, 2] }), "": "" };
  const out = decodeSafetensors(encodeSafetensors(tensors, metadata));
  assertEquals(out.metadata, metadata);
  assertEquals(Object.keys(out.tensors), Object.keys(tensors));
  for (const [name, t] of Object.entries(tensors)) {
    const got = out.tensors[name];
    assertEquals(got.dtype, t.dtype, name);
    assertEquals(got.shape, t.shape, name);
    assertEquals(got.data.constructor, t.data.constructor, name);
    assertEquals(rawBytes(got.data), rawBytes(t.data), name);
  }
  assert(Object.is(out.tensors.f32.data[0], -0));
  assertEquals(Object.getPrototypeOf(out.tensors), Object.prototype);
});

Deno.test("encode: rejects mismatched data and reserved names", () => {
  assertSafeError(
    () => encodeSafetensors({ w: { dtype: "F32", shape: [2, 2], data: new Float32Array(3) } }),
    '"w"',
    "4 elements",
    "3",
  );
  assertSafeError(
    () => encodeSafetensors({ w: { dtype: "F16", shape: [1], data: new Float32Array(1) } }),
    "Uint16Array",
  );
  assertSafeError(
    () => encodeSafetensors({ w: { dtype: "F32", shape: [-1], data: new Float32Array(0) } }),
    "non-negative",
  );
  assertSafeError(
    () =>
      encodeSafetensors({ w: { dtype: "F8" as SafeDType, shape: [1], data: new Uint8Array(1) } }),
    "unsupported dtype",
  );
  assertSafeError(
    () => encodeSafetensors({ __metadata__: { dtype: "U8", shape: [0], data: new Uint8Array() } }),
    "reserved",
  );
  assertSafeError(
    () => encodeSafetensors({}, { n: 3 as unknown as string }),
    "must map strings to strings",
  );
});

// ---------------------------------------------------------------------------------------------
// F16 / BF16 / F64 conversion.

Deno.test("toFloat32: F16 values computed by hand", () => {
  const cases: [number, number][] = [
    [0x3c00, 1],
    [0xc000, -2],
    [0x3800, 0.5],
    [0x3555, 1365 / 4096], // 0.333251953125 = (1 + 341/1024) * 2^-2
    [0x7bff, 65504], // largest finite
    [0x0400, 2 ** -14], // smallest normal
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x8001, -(2 ** -24)],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
    [0x0000, 0],
  ];
  const t: SafeTensor = {
    dtype: "F16",
    shape: [cases.length],
    data: new Uint16Array(cases.map((c) => c[0])),
  };
  const out = toFloat32(t);
  assertInstanceOf(out, Float32Array);
  assertEquals(Array.from(out), cases.map((c) => c[1]));
  const special = toFloat32({ dtype: "F16", shape: [2], data: new Uint16Array([0x8000, 0x7e00]) });
  assert(Object.is(special[0], -0));
  assert(Number.isNaN(special[1]));
});

Deno.test("toFloat32: all 65536 F16 patterns match the IEEE formula", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const out = toFloat32({ dtype: "F16", shape: [65536], data: all });
  for (let h = 0; h < 65536; h++) {
    const s = h >> 15 ? -1 : 1;
    const e = (h >> 10) & 31;
    const m = h & 1023;
    const expected = e === 31
      ? (m ? NaN : s * Infinity)
      : e === 0
      ? s * m * 2 ** -24
      : s * (1 + m / 1024) * 2 ** (e - 15);
    if (!Object.is(out[h], expected)) throw new Error(`F16 0x${h.toString(16)}: ${out[h]}`);
  }
});

Deno.test("toFloat32: BF16, F64 and F32", () => {
  const bf = toFloat32({
    dtype: "BF16",
    shape: [6],
    data: new Uint16Array([0x3f80, 0xc000, 0x4049, 0x0001, 0xff80, 0x8000]),
  });
  // 0x4049 -> f32 bits 0x40490000 = 2 * (1 + 0x49/128) = 3.140625; 0x0001 -> 2^16 * 2^-149.
  assertEquals(Array.from(bf), [1, -2, 3.140625, 2 ** -133, -Infinity, -0]);
  assert(Object.is(bf[5], -0));
  const d = toFloat32({ dtype: "F64", shape: [3], data: new Float64Array([1.5, 0.1, 1e300]) });
  assertEquals(Array.from(d), [1.5, Math.fround(0.1), Infinity]);
  const f = new Float32Array([1, 2]);
  assertEquals(toFloat32({ dtype: "F32", shape: [2], data: f }), f);
  assertThrows(
    () => toFloat32({ dtype: "I64", shape: [1], data: new BigInt64Array(1) }),
    TypeError,
    "integer",
  );
});

// ---------------------------------------------------------------------------------------------
// Malformed files.

const goodHeader = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ "blocks.0.norm1.weight": entry("F32", [2], [0, 8]), ...extra });

Deno.test("decode errors: short and truncated files name the file and the tensor", () => {
  const full = encodeSafetensors({
    "norm.weight": { dtype: "F32", shape: [4], data: new Float32Array(4) },
  });
  assertSafeError(() => decodeSafetensors(full.subarray(0, 5), "a.st"), "a.st", "5 bytes");
  assertSafeError(() => decodeSafetensors(new Uint8Array(0), "a.st"), "a.st", "too short");
  // Cut inside the header.
  assertSafeError(
    () => decodeSafetensors(full.subarray(0, 30), "a.st"),
    "a.st",
    "header length",
    "truncated",
  );
  // Cut inside the data.
  assertSafeError(
    () => decodeSafetensors(full.subarray(0, full.length - 3), "model.safetensors"),
    "model.safetensors",
    '"norm.weight"',
    "truncated",
  );
});

Deno.test("decode errors: header length larger than the file or the limit, no allocation", () => {
  const huge = buildFile("{}", new Uint8Array(0), 2n ** 64n - 1n);
  assertSafeError(() => decodeSafetensors(huge, "x"), "18446744073709551615", "exceeds");
  const big = buildFile("{}", new Uint8Array(0), 1000n);
  assertSafeError(() => decodeSafetensors(big, "x"), "1000");
  // A file larger than the limit whose header length claims more than the limit.
  const bytes = new Uint8Array(MAX_HEADER_BYTES + 16);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
  assertSafeError(() => decodeSafetensors(bytes, "x"), "limit");
});

Deno.test("decode errors: bad JSON, bad UTF-8, wrong header types", () => {
  assertSafeError(() => decodeSafetensors(buildFile("{not json", new Uint8Array())), "JSON");
  const badUtf8 = buildFile('{"a":1}', new Uint8Array());
  badUtf8[9] = 0xff;
  assertSafeError(() => decodeSafetensors(badUtf8, "u.st"), "u.st", "UTF-8");
  assertSafeError(() => decodeSafetensors(buildFile("[]", new Uint8Array())), "array");
  assertSafeError(() => decodeSafetensors(buildFile("null", new Uint8Array())), "null");
  assertSafeError(
    () => decodeSafetensors(buildFile('{"w": 3}', new Uint8Array())),
    '"w"',
    "object",
  );
  assertSafeError(
    () => decodeSafetensors(buildFile('{"__metadata__": {"a": 1}}', new Uint8Array())),
    "__metadata__",
    "string",
  );
  assertSafeError(
    () => decodeSafetensors(buildFile('{"__metadata__": []}', new Uint8Array())),
    "__metadata__",
  );
});

Deno.test("decode errors: dtype, shape, offsets, size mismatch", () => {
  const data8 = new Uint8Array(8);
  const dec = (header: string, data = data8) => () =>
    decodeSafetensors(buildFile(header, data), "f");
  assertSafeError(dec(JSON.stringify({ w: entry("F8", [2], [0, 8]) })), '"w"', "dtype", '"F8"');
  assertSafeError(dec(JSON.stringify({ w: entry("float32", [2], [0, 8]) })), "float32");
  assertSafeError(dec(JSON.stringify({ w: entry("F32", [-2], [0, 8]) })), '"w"', "shape");
  assertSafeError(dec(JSON.stringify({ w: entry("F32", [2.5], [0, 8]) })), "shape");
  assertSafeError(dec(JSON.stringify({ w: entry("F32", "2", [0, 8]) })), "shape");
  assertSafeError(dec(JSON.stringify({ w: entry("F32", [2], [0]) })), "data_offsets");
  assertSafeError(dec(JSON.stringify({ w: entry("F32", [2], [-8, 0]) })), "data_offsets");
  assertSafeError(dec(JSON.stringify({ w: entry("F32", [0], [8, 0]) })), "begin > end");
  assertSafeError(
    dec(JSON.stringify({ w: entry("F32", [4], [0, 16]) })),
    '"w"',
    "[0, 16]",
    "8 bytes",
  );
  assertSafeError(
    dec(JSON.stringify({ w: entry("F32", [3], [0, 8]) })),
    '"w"',
    "8 bytes",
    "needs 12 bytes",
  );
  assertSafeError(
    dec(JSON.stringify({ w: entry("F32", [2 ** 40, 2 ** 40], [0, 8]) })),
    '"w"',
    "needs",
  );
  // A valid header for reference: decodes.
  assertEquals(Object.keys(decodeSafetensors(buildFile(goodHeader(), data8)).tensors), [
    "blocks.0.norm1.weight",
  ]);
});

Deno.test("decode errors: overlapping tensors, gaps, trailing bytes", () => {
  const hdr = (o: Record<string, unknown>) => JSON.stringify(o);
  assertSafeError(
    () =>
      decodeSafetensors(
        buildFile(
          hdr({ a: entry("F32", [2], [0, 8]), b: entry("F32", [2], [4, 12]) }),
          new Uint8Array(12),
        ),
        "o.st",
      ),
    "o.st",
    '"b"',
    "overlap",
    '"a"',
  );
  // Two tensors on the very same bytes.
  assertSafeError(
    () =>
      decodeSafetensors(
        buildFile(
          hdr({ a: entry("U8", [4], [0, 4]), b: entry("I32", [1], [0, 4]) }),
          new Uint8Array(4),
        ),
      ),
    "overlap",
  );
  assertSafeError(
    () =>
      decodeSafetensors(
        buildFile(
          hdr({ a: entry("U8", [2], [0, 2]), b: entry("U8", [2], [3, 5]) }),
          new Uint8Array(5),
        ),
      ),
    '"b"',
    "gap",
  );
  assertSafeError(
    () => decodeSafetensors(buildFile(hdr({ a: entry("U8", [2], [0, 2]) }), new Uint8Array(6))),
    "4 trailing bytes",
  );
  // Zero-size tensors may share an offset with others.
  const ok = decodeSafetensors(
    buildFile(
      hdr({
        e: entry("F32", [0, 3], [2, 2]),
        a: entry("U8", [2], [0, 2]),
        z: entry("I64", [0], [0, 0]),
      }),
      new Uint8Array([5, 6]),
    ),
  );
  assertEquals(ok.tensors.e.shape, [0, 3]);
  assertEquals(ok.tensors.e.data.length, 0);
  assertEquals(vals(ok.tensors.a.data), [5, 6]);
});

// ---------------------------------------------------------------------------------------------
// Files on disk.

Deno.test("writeSafetensors / readSafetensors: round trip on disk, no temp files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/ckpt.safetensors`;
    const w = new Float32Array([1, -0, 3.5]);
    await writeSafetensors(path, { w: { dtype: "F32", shape: [3], data: w } }, { step: "10" });
    const { tensors, metadata } = await readSafetensors(path);
    assertEquals(metadata, { step: "10" });
    assertEquals(f32Bits(tensors.w.data as Float32Array), f32Bits(w));
    // Overwrite with new contents.
    await writeSafetensors(path, { v: { dtype: "U8", shape: [1], data: new Uint8Array([1]) } });
    assertEquals(Object.keys((await readSafetensors(path)).tensors), ["v"]);
    assertEquals(await listDir(dir), ["ckpt.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readSafetensors: missing and corrupt files name the path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const missing = `${dir}/nope.safetensors`;
    const e = await assertRejects(() => readSafetensors(missing), SafetensorsError);
    assertStringIncludes(e.message, missing);
    assertStringIncludes(e.message, "not found");
    const bad = `${dir}/bad.safetensors`;
    await Deno.writeFile(bad, new Uint8Array([1, 2, 3]));
    const e2 = await assertRejects(() => readSafetensors(bad), SafetensorsError);
    assertStringIncludes(e2.message, bad);
    const e3 = await assertRejects(() => readSafetensors(dir), SafetensorsError);
    assertStringIncludes(e3.message, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Property-based: valid files round-trip; anything else is a SafetensorsError, quickly.

const DTYPE_SIZES: Record<SafeDType, number> = {
  F32: 4,
  F64: 8,
  F16: 2,
  BF16: 2,
  I32: 4,
  I64: 8,
  U8: 1,
};

const ARRAYS = {
  F32: Float32Array,
  F64: Float64Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  I64: BigInt64Array,
  U8: Uint8Array,
} as const;

/** A random valid tensor whose data are random bytes (so every bit pattern occurs). */
const tensorArb: fc.Arbitrary<SafeTensor> = fc
  .record({
    dtype: fc.constantFrom(...(Object.keys(DTYPE_SIZES) as SafeDType[])),
    shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
  })
  .chain(({ dtype, shape }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const size = DTYPE_SIZES[dtype];
    return fc.uint8Array({ minLength: n * size, maxLength: n * size }).map((raw) => ({
      dtype,
      shape,
      data: new ARRAYS[dtype](raw.buffer, 0, n),
    }));
  });

const fileArb = fc.record({
  tensors: fc.dictionary(fc.string({ maxLength: 12 }), tensorArb, { maxKeys: 5 }),
  metadata: fc.option(fc.dictionary(fc.string(), fc.string(), { maxKeys: 3 }), {
    nil: undefined,
  }),
});

/** Decodes and checks that either valid data or a SafetensorsError comes out. */
function decodeIsSafe(bytes: Uint8Array): void {
  const t0 = performance.now();
  try {
    const { tensors, metadata } = decodeSafetensors(bytes, "fuzz");
    for (const v of Object.values(metadata)) assertEquals(typeof v, "string");
    for (const t of Object.values(tensors)) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      assertEquals(t.data.length, n);
      assertInstanceOf(t.data, ARRAYS[t.dtype]);
    }
  } catch (e) {
    if (!(e instanceof SafetensorsError)) throw e;
    assertStringIncludes(e.message, "fuzz");
  }
  const ms = performance.now() - t0;
  assert(ms < 200, `decode took ${ms.toFixed(0)} ms on ${bytes.length} bytes`);
}

Deno.test("property: encode -> decode is bit-exact for random tensors", () => {
  fc.assert(
    fc.property(fileArb, ({ tensors, metadata }) => {
      const out = decodeSafetensors(encodeSafetensors(tensors, metadata));
      assertEquals(out.metadata, metadata ?? {});
      assertEquals(Object.keys(out.tensors), Object.keys(tensors));
      for (const [k, t] of Object.entries(tensors)) {
        assertEquals(out.tensors[k].dtype, t.dtype);
        assertEquals(out.tensors[k].shape, t.shape);
        assertEquals(rawBytes(out.tensors[k].data), rawBytes(t.data));
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("property: random bytes decode or throw SafetensorsError", () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), decodeIsSafe), { numRuns: 500 });
  // Random JSON as a header, with a consistent length field, exercises the validator.
  fc.assert(
    fc.property(fc.jsonValue(), fc.uint8Array({ maxLength: 64 }), (json, data) => {
      decodeIsSafe(buildFile(JSON.stringify(json), data));
    }),
    { numRuns: 300 },
  );
});

Deno.test("property: mutated valid files decode or throw SafetensorsError", () => {
  const byteMutation = fc.oneof(
    fc.record({
      kind: fc.constant("flip" as const),
      at: fc.nat(),
      value: fc.integer({ min: 0, max: 255 }),
    }),
    fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
    fc.record({
      kind: fc.constant("insert" as const),
      at: fc.nat(),
      value: fc.integer({ min: 0, max: 255 }),
    }),
    fc.record({
      kind: fc.constant("length" as const),
      value: fc.bigUint64Array({ minLength: 1, maxLength: 1 }),
    }),
  );
  fc.assert(
    fc.property(fileArb, fc.array(byteMutation, { minLength: 1, maxLength: 4 }), (f, muts) => {
      let bytes = encodeSafetensors(f.tensors, f.metadata);
      for (const m of muts) {
        if (m.kind === "length") {
          if (bytes.length < 8) continue;
          new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(0, m.value[0], true);
          continue;
        }
        const at = bytes.length === 0 ? 0 : m.at % (bytes.length + 1);
        if (m.kind === "flip" && at < bytes.length) bytes[at] = m.value;
        if (m.kind === "truncate") bytes = bytes.slice(0, at);
        if (m.kind === "insert") {
          const grown = new Uint8Array(bytes.length + 1);
          grown.set(bytes.subarray(0, at));
          grown[at] = m.value;
          grown.set(bytes.subarray(at), at + 1);
          bytes = grown;
        }
      }
      decodeIsSafe(bytes);
    }),
    { numRuns: 500 },
  );

  // Structural mutations: replace one field of one header entry by an arbitrary JSON value or a
  // nearby integer, keeping the JSON valid, so the entry validator is what gets exercised.
  const fieldValue = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.integer({ min: -3, max: 80 }),
    fc.array(fc.integer({ min: -2, max: 70 }), { maxLength: 3 }),
    fc.constantFrom("F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3"),
  );
  fc.assert(
    fc.property(
      fileArb,
      fc.nat(),
      fc.constantFrom("dtype", "shape", "data_offsets", "__metadata__", "self"),
      fieldValue,
      (f, which, field, value) => {
        const bytes = encodeSafetensors(f.tensors, f.metadata);
        const { len, json } = readHeader(bytes);
        const keys = Object.keys(json);
        if (field === "__metadata__") json.__metadata__ = value as Header[string]; // deliberately ill-typed
        else if (keys.length > 0) {
          const k = keys[which % keys.length];
          if (field === "self") json[k] = value as Header[string];
          else if (k !== "__metadata__") json[k][field] = value;
        }
        decodeIsSafe(buildFile(JSON.stringify(json), bytes.subarray(8 + len)));
      },
    ),
    { numRuns: 500 },
  );
});
