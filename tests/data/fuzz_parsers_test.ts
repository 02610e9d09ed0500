/**
 * Property-based tests (fast-check) of the file parsers (issue "Reliability", item 7): given
 * random or mutated bytes, each reader either returns valid data or fails with the project's own
 * error, quickly and without allocating beyond a bound (no hang, no crash, no other error type).
 *
 * - CIFAR-10 `.bin` reader (`loadCifar10`): valid data or a `DataError`;
 * - Fashion-MNIST binary cache reader (`readFmnistCache`, the project's IDX-like format): a
 *   valid split or `"invalid"` (the loader then rebuilds the cache); nothing is allocated for a
 *   file whose header and length disagree;
 * - ImageFolder's image decoder (`decodeImage`, PNG and JPEG): RGBA of the size its header
 *   states or a `DataError`; headers claiming huge sizes are refused before any allocation.
 *
 * The safetensors reader is fuzzed in tests/io/safetensors_test.ts ("property: random bytes decode
 * or throw SafetensorsError", "property: mutated valid files ...").
 */
import fc from "fast-check";
import { assert, assertEquals, assertInstanceOf, assertStringIncludes } from "@std/assert";
import { PNG } from "pngjs";
import jpeg from "jpeg-js";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { DataError, type Dataset, loadCifar10 } from "../../lib/data/mod.ts";
import { FMNIST_CACHE_FILE, readFmnistCache } from "../../lib/data/fmnist.ts";
import { decodeImage, MAX_IMAGE_PIXELS } from "../../lib/data/imagefolder.ts";

/** Per-case time bound (ms): generous for a loaded CI machine, far below a hang. */
const CASE_MS = 3000;
/** Resident memory a single case may add (bytes). */
const CASE_RSS = 256 * 2 ** 20;

/** A byte mutation: overwrite, truncate, insert, or overwrite a 32-bit field (a header word). */
type Mutation =
  | { kind: "set"; at: number; value: number }
  | { kind: "truncate"; at: number }
  | { kind: "insert"; at: number; value: number }
  | { kind: "u32"; at: number; value: number; le: boolean };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.nat(255) }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), value: fc.nat(255) }),
  fc.record({
    kind: fc.constant("u32" as const),
    at: fc.nat(64),
    value: fc.oneof(fc.nat(), fc.constantFrom(0, 1, 0xffffffff, 0x7fffffff, 65535, 70000)),
    le: fc.boolean(),
  }),
);

function mutate(bytes: Uint8Array, muts: Mutation[]): Uint8Array {
  let b = bytes.slice();
  for (const m of muts) {
    const at = m.at % (b.length + 1);
    if (m.kind === "set" && at < b.length) b[at] = m.value;
    if (m.kind === "truncate") b = b.slice(0, at);
    if (m.kind === "insert") {
      b = Uint8Array.from([...b.subarray(0, at), m.value, ...b.subarray(at)]);
    }
    if (m.kind === "u32" && at + 4 <= b.length) {
      new DataView(b.buffer).setUint32(at, m.value >>> 0, m.le);
    }
  }
  return b;
}

/** Runs one case, checking the time and resident-memory bounds. */
async function bounded<T>(what: string, fn: () => Promise<T> | T): Promise<T> {
  const rss0 = Deno.memoryUsage().rss;
  const t0 = performance.now();
  const out = await fn();
  const ms = performance.now() - t0;
  assert(ms < CASE_MS, `${what} took ${ms.toFixed(0)} ms`);
  const grown = Deno.memoryUsage().rss - rss0;
  assert(grown < CASE_RSS, `${what} grew the RSS by ${(grown / 2 ** 20).toFixed(0)} MiB`);
  return out;
}

function checkDataset(ds: Dataset, h: number, w: number, c: number, classes: number): void {
  assertEquals([ds.height, ds.width, ds.channels], [h, w, c]);
  assertEquals(ds.images.length, ds.length * h * w * c);
  assertEquals(ds.labels.length, ds.length);
  for (const l of ds.labels) assert(l >= 0 && l < classes, `label ${l}`);
}

// ---------------------------------------------------------------- CIFAR-10

const RECORD = 3073;

/** Valid records: label then 3072 random-ish pixel bytes. */
const cifarArb = fc.record({
  labels: fc.array(fc.nat(9), { maxLength: 3 }),
  seed: fc.nat(255),
}).map(({ labels, seed }) => {
  const b = new Uint8Array(labels.length * RECORD);
  labels.forEach((l, r) => {
    b[r * RECORD] = l;
    for (let i = 1; i < RECORD; i++) b[r * RECORD + i] = (seed + r * 7 + i * 13) & 255;
  });
  return b;
});

Deno.test("fuzz: the CIFAR-10 reader returns valid data or a DataError", async () => {
  const root = await Deno.makeTempDir({ prefix: "vitssl_fuzz_cifar_" });
  const file = join(root, "test_batch.bin");
  let valid = 0, errors = 0;
  const check = async (bytes: Uint8Array) => {
    await Deno.writeFile(file, bytes);
    await bounded(`CIFAR file of ${bytes.length} bytes`, async () => {
      try {
        const ds = await loadCifar10("test", { root });
        valid++;
        // Valid only for a whole number of records with labels 0..9; values in place.
        assertEquals(ds.length * RECORD, bytes.length);
        checkDataset(ds, 32, 32, 3, 10);
        for (let r = 0; r < ds.length; r++) {
          assertEquals(ds.labels[r], bytes[r * RECORD]);
          // Pixel (y 5, x 7), channel 2 of record r: CHW plane 2 in the file.
          const inFile = bytes[r * RECORD + 1 + 2 * 1024 + 5 * 32 + 7];
          assertEquals(ds.images[((r * 32 + 5) * 32 + 7) * 3 + 2], inFile);
        }
      } catch (e) {
        if (!(e instanceof DataError)) throw e;
        errors++;
        assertStringIncludes(e.message, file);
      }
    });
  };
  try {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 7000 }), check), {
      numRuns: 60,
    });
    await fc.assert(
      fc.asyncProperty(
        cifarArb,
        fc.array(mutationArb, { maxLength: 3 }),
        (b, m) => check(mutate(b, m)),
      ),
      { numRuns: 120 },
    );
    console.log(`CIFAR-10: ${valid} valid, ${errors} DataError`);
    assert(valid > 0 && errors > 0, "both outcomes should occur");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

// ---------------------------------------------------------------- Fashion-MNIST cache

const N_TRAIN = 60000, N_TEST = 10000, PIXELS = 784;
const FULL = 32 + (N_TRAIN + N_TEST) * (PIXELS + 1);

/** The 32-byte header of a valid version-1 cache, built from the format in lib/data/fmnist.ts. */
function cacheHeader(): Uint8Array {
  const h = new Uint8Array(32);
  h.set(new TextEncoder().encode("VSSLFMNI"));
  const v = new DataView(h.buffer);
  [1, 28, 28, 1, N_TRAIN, N_TEST].forEach((x, k) => v.setUint32(8 + 4 * k, x, true));
  return h;
}

Deno.test("fuzz: the Fashion-MNIST cache reader returns a valid split or 'invalid'", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl_fuzz_fmnist_" });
  const path = join(dir, FMNIST_CACHE_FILE);
  const outcomes = { valid: 0, invalid: 0 };
  const read = (split: "train" | "test") =>
    bounded(`cache read (${split})`, async () => {
      const r = await readFmnistCache(path, split);
      if (r === "missing") throw new Error("the cache file exists");
      if (r === "invalid") outcomes.invalid++;
      else {
        outcomes.valid++;
        assertEquals(r.length, split === "train" ? N_TRAIN : N_TEST);
        checkDataset(r, 28, 28, 1, 10);
      }
      return r;
    });
  try {
    assertEquals(await readFmnistCache(path, "test"), "missing");
    // Short files: random bytes, and a valid header with random bytes or mutations after it.
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 200 }),
        fc.boolean(),
        fc.array(mutationArb, { maxLength: 3 }),
        async (tail, withHeader, muts) => {
          const head = withHeader ? cacheHeader() : new Uint8Array(0);
          await Deno.writeFile(path, mutate(Uint8Array.from([...head, ...tail]), muts));
          assertEquals(await read(muts.length % 2 ? "train" : "test"), "invalid");
        },
      ),
      { numRuns: 150 },
    );
    // Full-length files (sparse: zeros are valid pixels and labels): a header word changed to
    // any value (e.g. nTest = 0xffffffff) is refused before allocating; a label byte >= 10 in the
    // split read is refused; other label bytes are read back as labels.
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.constant(6), fc.nat(5)),
        fc.oneof(fc.nat(), fc.constantFrom(0, 9999, 10001, 0xffffffff)),
        fc.nat(N_TEST - 1),
        fc.oneof(fc.nat(9), fc.nat(255)),
        async (field, value, at, label) => {
          const f = await Deno.open(path, { write: true, create: true, truncate: true });
          const h = cacheHeader();
          // Header words 0..5: version, height, width, channels, nTrain, nTest (6: unchanged).
          const original = field < 6 ? new DataView(h.buffer).getUint32(8 + 4 * field, true) : 0;
          if (field < 6) new DataView(h.buffer).setUint32(8 + 4 * field, value, true);
          await f.write(h);
          await f.truncate(FULL);
          const labelAt = 32 + N_TRAIN * (PIXELS + 1) + N_TEST * PIXELS + at;
          await f.seek(labelAt, Deno.SeekMode.Start);
          await f.write(new Uint8Array([label]));
          f.close();
          const r = await read("test");
          const headerOk = field === 6 || value === original;
          if (!headerOk || label >= 10) assertEquals(r, "invalid");
          else {
            assert(r !== "invalid");
            assertEquals((r as Dataset).labels[at], label);
          }
        },
      ),
      // Always among the cases: a valid file, and nTest = 0xffffffff (a 2^32-image claim).
      { numRuns: 8, examples: [[6, 0, 1234, 7], [5, 0xffffffff, 0, 0]] },
    );
    console.log(`Fashion-MNIST cache: ${outcomes.valid} valid, ${outcomes.invalid} invalid`);
    assert(outcomes.valid > 0 && outcomes.invalid > 0, "both outcomes should occur");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- PNG / JPEG

/** A small valid PNG (RGBA) or JPEG of the given size. */
function encodeImage(format: "png" | "jpeg", width: number, height: number): Uint8Array {
  const data = Buffer.alloc(width * height * 4);
  for (let i = 0; i < data.length; i++) data[i] = (width * 31 + i * 29) & 255;
  if (format === "png") {
    const png = new PNG({ width, height });
    data.copy(png.data);
    return new Uint8Array(PNG.sync.write(png));
  }
  return new Uint8Array(jpeg.encode({ width, height, data }, 80).data);
}

/** Valid images to mutate: a fixed pool (jpeg-js takes ~30 ms to encode even a tiny image). */
const POOL = ([[1, 1], [3, 5], [8, 8], [12, 7]] as const).flatMap(([w, h]) => [
  encodeImage("png", w, h),
  encodeImage("jpeg", w, h),
]);
const imageArb = fc.constantFrom(...POOL);

function decodeIsSafe(bytes: Uint8Array): Promise<"ok" | "error"> {
  return bounded(`decode of ${bytes.length} bytes`, () => {
    try {
      const img = decodeImage(bytes, "fuzz.img");
      assert(img.width >= 1 && img.height >= 1, `${img.width}x${img.height}`);
      assert(img.width * img.height <= MAX_IMAGE_PIXELS);
      assertEquals(img.rgba.length, img.width * img.height * 4);
      assertInstanceOf(img.rgba, Uint8Array);
      return "ok";
    } catch (e) {
      if (!(e instanceof DataError)) throw e;
      assertStringIncludes(e.message, "fuzz.img");
      return "error";
    }
  });
}

Deno.test("fuzz: decodeImage (PNG, JPEG) returns RGBA of the stated size or a DataError", async () => {
  const seen = { ok: 0, error: 0 };
  const count = async (bytes: Uint8Array) => {
    seen[await decodeIsSafe(bytes)]++;
  };
  // Random bytes, with and without a PNG or JPEG signature in front.
  const signature = fc.constantFrom(
    new Uint8Array(0),
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    new Uint8Array([0xff, 0xd8, 0xff]),
  );
  await fc.assert(
    fc.asyncProperty(signature, fc.uint8Array({ maxLength: 300 }), async (sig, rest) => {
      await count(Uint8Array.from([...sig, ...rest]));
    }),
    { numRuns: 200 },
  );
  // Mutated valid images: the stated size replaced (up to 65535 x 65535), bytes changed, cut,
  // inserted; for PNGs, half the time with every chunk's CRC recomputed, so that the mutation
  // gets past the CRC check to the header and data parsers.
  const size = fc.option(
    fc.tuple(fc.integer({ min: 1, max: 65535 }), fc.integer({ min: 1, max: 65535 })),
  );
  await fc.assert(
    fc.asyncProperty(
      imageArb,
      size,
      fc.array(mutationArb, { maxLength: 4 }),
      fc.boolean(),
      (b, wh, m, fixCrc) => {
        const bytes = mutate(wh ? setSize(b, wh[0], wh[1]) : b, m);
        return count(fixCrc ? fixPngCrcs(bytes) : bytes);
      },
    ),
    { numRuns: 400 },
  );
  console.log(`decodeImage: ${seen.ok} decoded, ${seen.error} DataError`);
  assert(seen.ok > 0 && seen.error > 0, "both outcomes should occur");
});

Deno.test("decodeImage: a 70-byte PNG or a 600-byte JPEG claiming a huge size allocates nothing", async () => {
  const png = new PNG({ width: 4, height: 3 });
  const small = new Uint8Array(PNG.sync.write(png));
  const jpg = new Uint8Array(
    jpeg.encode({ width: 8, height: 8, data: Buffer.alloc(256, 128) }, 90).data,
  );
  const sof = jpg.findIndex((b, i) => b === 0xff && jpg[i + 1] === 0xc0);
  for (const [w, h] of [[20000, 20000], [65535, 65535], [200, 200]]) {
    const p = small.slice();
    const v = new DataView(p.buffer);
    v.setUint32(16, w);
    v.setUint32(20, h);
    v.setUint32(29, crc32(p.subarray(12, 29))); // a valid chunk CRC: only the size is wrong
    assertEquals(await decodeIsSafe(p), "error", `PNG ${w}x${h}`);
    const j = jpg.slice();
    new DataView(j.buffer).setUint16(sof + 5, h);
    new DataView(j.buffer).setUint16(sof + 7, w);
    assertEquals(await decodeIsSafe(j), "error", `JPEG ${w}x${h}`);
  }
});

/** A copy of a PNG or baseline JPEG whose header states `width x height` instead. */
function setSize(img: Uint8Array, width: number, height: number): Uint8Array {
  const b = img.slice();
  const v = new DataView(b.buffer);
  if (b[0] === 0x89) {
    v.setUint32(16, width);
    v.setUint32(20, height);
    return b;
  }
  const sof = b.findIndex((x, i) => x === 0xff && b[i + 1] === 0xc0);
  v.setUint16(sof + 5, height);
  v.setUint16(sof + 7, width);
  return b;
}

/** Recomputes the CRC of every complete chunk of a PNG (in place; other bytes untouched). */
function fixPngCrcs(b: Uint8Array): Uint8Array {
  if (b[0] !== 0x89 || b[1] !== 0x50) return b;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let p = 8; p + 12 <= b.length;) {
    const len = v.getUint32(p);
    if (p + 12 + len > b.length) break;
    v.setUint32(p + 8 + len, crc32(b.subarray(p + 4, p + 8 + len)));
    p += 12 + len;
  }
  return b;
}

/** CRC-32 of PNG chunks (ISO 3309), bit by bit. */
function crc32(buf: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of buf) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}
