/**
 * Tests of lib/io/pth.ts and of loading PyTorch checkpoints as backbones: the restricted unpickler
 * on pickles written by Python (hex below), and files written by Debian's PyTorch
 * (tests/reference/write_pth.py: a tiny ViT in the official MoCo v3 layout and as a timm state
 * dict, float16/bfloat16/float64/int storages, views sharing one storage with offsets and
 * strides), compared tensor by tensor with the values the script wrote as raw little-endian
 * bytes; truncated, damaged, legacy and refused files.
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  assert,
  assertEquals,
  assertFalse,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { decodePth, PthError, readPth, stateDict, unpickle } from "../../lib/io/pth.ts";
import { type SafeTensor, toFloat32, writeSafetensors } from "../../lib/io/safetensors.ts";
import { CONFIG_KEY, loadBackbone } from "../../lib/train/checkpoint.ts";
import { disposeViT, type ViT, vitForward } from "../../lib/model/vit.ts";
import { evaluate } from "../../lib/cli/eval_run.ts";
import { commandStatus, requireTool } from "../_helpers/system_tools.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

await initBackend({ backend: "cpu" });

const hex = (s: string) => Uint8Array.from(s.match(/../g)!, (h) => parseInt(h, 16));

// ---------- the unpickler, on pickles written by Python ----------

Deno.test("unpickle: protocol 2 containers, ints of every width, floats, strings, booleans", () => {
  // pickle.dumps({'a': [1, -2, 3.5, None, True, False, 'é', (1, 2), 2**70, -300, 70000,
  //   -(2**40)], 'b': {}}, protocol=2)
  const bytes = hex(
    "80027d71002858010000006171015d7102284b014afeffffff47400c0000000000004e88895802000000c3a9" +
      "71034b014b028671048a090000000000000000404ad4feffff4a701101008a060000000000ff655801000000" +
      "6271057d7106752e",
  );
  const v = unpickle(bytes) as Map<string, unknown>;
  assertInstanceOf(v, Map);
  assertEquals([...v.keys()], ["a", "b"]);
  assertEquals(v.get("a"), [
    1,
    -2,
    3.5,
    null,
    true,
    false,
    "é",
    [1, 2],
    2n ** 70n,
    -300,
    70000,
    -(2 ** 40),
  ]);
  assertEquals(v.get("b"), new Map());
});

Deno.test("unpickle: protocol 4 (frames, memoize, short strings)", () => {
  // pickle.dumps({'t': (1,), 'u': ('x', 'y', 'z'), 'big': 2**31}, protocol=4)
  const bytes = hex(
    "8004952c000000000000007d94288c0174944b0185948c0175948c0178948c0179948c017a9487948c036269" +
      "67948a050000008000752e",
  );
  assertEquals(
    unpickle(bytes),
    new Map<string, unknown>([["t", [1]], ["u", ["x", "y", "z"]], ["big", 2 ** 31]]),
  );
});

Deno.test("unpickle refuses any other global with one line naming it, before calling anything", () => {
  // pickle.dumps(argparse.Namespace(a=1), protocol=2)
  const ns = hex(
    "80026361726770617273650a4e616d6573706163650a7100298171017d710258010000006171034b0173622e",
  );
  const e = assertThrows(() => unpickle(ns, { source: "x.pth" }), PthError);
  assertStringIncludes(e.message, "refusing the global argparse.Namespace");
  assertStringIncludes(e.message, "x.pth");
  assertFalse(e.message.includes("\n"));
  // The classic exploit: cposix\nsystem\n(S'ls'\ntR.
  const evil = new TextEncoder().encode("cposix\nsystem\n(S'ls'\ntR.");
  assertStringIncludes(assertThrows(() => unpickle(evil), PthError).message, "posix.system");
  // builtins.eval by STACK_GLOBAL (protocol 4).
  const stackGlobal = hex("80048c086275696c74696e73948c046576616c9493942e");
  assertStringIncludes(
    assertThrows(() => unpickle(stackGlobal), PthError).message,
    "builtins.eval",
  );
});

Deno.test("unpickle: truncated and malformed pickles are one-line errors", () => {
  const full = hex("80027d710058010000006171014b01732e");
  assertEquals(unpickle(full), new Map([["a", 1]]));
  for (let n = 0; n < full.length; n++) {
    const e = assertThrows(() => unpickle(full.subarray(0, n)), PthError);
    assertFalse(e.message.includes("\n"), e.message);
  }
  const bad = assertThrows(() => unpickle(hex("8002ff2e")), PthError);
  assertStringIncludes(bad.message, "unsupported pickle opcode 0xff");
  // A persistent id outside a checkpoint, and a memo entry that was never put.
  assertThrows(() => unpickle(hex("80024b0051" + "2e")), PthError, "persistent id");
  assertThrows(() => unpickle(hex("800268052e")), PthError, "memo entry 5");
});

// ---------- files written by PyTorch ----------

const torchStatus = await commandStatus("/usr/bin/python3", ["-c", "import torch"]);
const skip = requireTool(
  "PyTorch checkpoint",
  torchStatus,
  "apt-get install python3-torch (Debian's /usr/bin/python3 must import torch)",
);

const dirs: string[] = [];
removeOnUnload(dirs);
let dir = "";
if (!skip) {
  dir = await Deno.makeTempDir({ prefix: "vitssl-pth-" });
  dirs.push(dir);
  const out = await new Deno.Command("/usr/bin/python3", {
    args: [new URL("../reference/write_pth.py", import.meta.url).pathname, dir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
}

interface Ref {
  shape: number[];
  dtype: string;
  kind: "f32" | "f64" | "i64";
  offset: number;
}

/** The script's reference values of `file:name`, contiguous, and its torch dtype. */
async function references(): Promise<(key: string) => { ref: Ref; values: ArrayLike<unknown> }> {
  const index = JSON.parse(await Deno.readTextFile(`${dir}/ref.json`)) as Record<string, Ref>;
  const bin = await Deno.readFile(`${dir}/ref.bin`);
  return (key: string) => {
    const ref = index[key];
    if (!ref) throw new Error(`no reference for ${key}`);
    const n = ref.shape.reduce((a, b) => a * b, 1);
    const view = new DataView(bin.buffer);
    const values = ref.kind === "f32"
      ? Float32Array.from({ length: n }, (_, i) => view.getFloat32(ref.offset + 4 * i, true))
      : ref.kind === "f64"
      ? Float64Array.from({ length: n }, (_, i) => view.getFloat64(ref.offset + 8 * i, true))
      : BigInt64Array.from({ length: n }, (_, i) => view.getBigInt64(ref.offset + 8 * i, true));
    return { ref, values };
  };
}

const DTYPES: Record<string, string> = {
  float32: "F32",
  float16: "F16",
  bfloat16: "BF16",
  float64: "F64",
  int64: "I64",
  int32: "I32",
};

/** Every tensor of `file` equals the script's values, in shape, dtype and value. */
async function assertMatches(file: string, path: string): Promise<Record<string, SafeTensor>> {
  const ref = await references();
  const { tensors } = await readPth(path);
  for (const [name, t] of Object.entries(tensors)) {
    const { ref: r, values } = ref(`${file}:${name}`);
    assertEquals(t.shape, r.shape, name);
    assertEquals(t.dtype, DTYPES[r.dtype], name);
    const got = r.kind === "f32"
      ? toFloat32(t)
      : r.kind === "i64" && t.dtype === "I32"
      ? BigInt64Array.from(t.data as Int32Array, (x) => BigInt(x))
      : t.data;
    assertEquals(got, values, name);
  }
  return tensors;
}

const test = (name: string, fn: () => Promise<void>) => Deno.test({ name, ignore: skip, fn });

test("readPth: the official MoCo v3 layout, every tensor equal to PyTorch's", async () => {
  const path = `${dir}/official.pth.tar`;
  const tensors = await assertMatches("official", path);
  const index = JSON.parse(await Deno.readTextFile(`${dir}/ref.json`));
  const expected = Object.keys(index).filter((k) => k.startsWith("official:")).map((k) =>
    k.slice("official:".length)
  );
  assertEquals(Object.keys(tensors), expected); // the state dict's order, no optimizer tensors
  assertEquals(tensors["module.base_encoder.head.1.num_batches_tracked"].dtype, "I64");
  const { metadata } = await readPth(path);
  assertEquals(metadata, { epoch: "300", arch: "vit_small" });
  // The optimizer and scaler were parsed too (AdamW's state: step, exp_avg, exp_avg_sq).
  const root = decodePth(await Deno.readFile(path)).root as Map<string, Map<string, unknown>>;
  const opt = root.get("optimizer")!;
  assertEquals([...(opt.get("state") as Map<number, Map<string, unknown>>).get(0)!.keys()], [
    "step",
    "exp_avg",
    "exp_avg_sq",
  ]);
  assertEquals((root.get("scaler")!).get("scale"), 65536);
});

test("readPth: views of one storage (transpose, slices, strides, a row, a scalar, stride 0, a Parameter)", async () => {
  const tensors = await assertMatches("views", `${dir}/views.pth`);
  assertEquals(Object.keys(tensors), [
    "whole",
    "transposed",
    "slice",
    "strided",
    "row",
    "scalar",
    "expanded",
    "parameter",
  ]);
  // Each view owns its data: changing one does not change another.
  (tensors.whole.data as Float32Array)[0] = 1e9;
  assert(toFloat32(tensors.transposed)[0] !== 1e9);
});

test("readPth: float16, bfloat16, float64, int32 and int64 storages", async () => {
  const tensors = await assertMatches("half", `${dir}/half.pth`);
  assertEquals(tensors["pos_embed"].dtype, "F16");
  assertEquals(tensors["extra.bf16"].dtype, "BF16");
  assertEquals(tensors["extra.half_t"].shape, [7, 5]);
});

/** The base encoder's tensors as the script wrote them, by timm name. */
async function baseEncoder(file: string, prefix: string): Promise<Record<string, SafeTensor>> {
  const ref = await references();
  const index = JSON.parse(await Deno.readTextFile(`${dir}/ref.json`)) as Record<string, Ref>;
  const out: Record<string, SafeTensor> = {};
  for (const key of Object.keys(index)) {
    if (!key.startsWith(`${file}:${prefix}`)) continue;
    const name = key.slice(`${file}:${prefix}`.length);
    if (name.startsWith("head.")) continue;
    const { ref: r, values } = ref(key);
    out[name] = { dtype: "F32", shape: r.shape, data: values as Float32Array };
  }
  return out;
}

function assertParams(model: ViT, expected: Record<string, SafeTensor>): void {
  const all = { ...model.params, ...model.buffers };
  assertEquals(Object.keys(all).sort(), Object.keys(expected).sort());
  for (const [name, t] of Object.entries(expected)) {
    assertEquals(all[name].shape, t.shape, name);
    assertEquals(all[name].dataSync(), t.data, name);
  }
}

/** The tiny ViT as the script built it: moco-v3's vit_small (12 heads) at D 24, depth 2. */
const TINY = {
  name: "vit_small",
  imageSize: 8,
  patchSize: 4,
  channels: 3,
  dim: 24,
  depth: 2,
  heads: 12,
  mlpRatio: 4,
  posEmb: "sincos",
  pool: "cls",
  mlpNorm: "layernorm",
  freezePatchEmbed: false,
  lnEps: 1e-6,
};

test("loadBackbone(.pth.tar): the base encoder without its projector, features equal to safetensors'", async () => {
  const n0 = tf.memory().numTensors;
  const model = await loadBackbone(`${dir}/official.pth.tar`);
  // The same weights as a safetensors file with the config written out by hand.
  const st = `${dir}/same.safetensors`;
  await writeSafetensors(st, await baseEncoder("official", "module.base_encoder."), {
    [CONFIG_KEY]: JSON.stringify(TINY),
  });
  const again = await loadBackbone(st);
  try {
    // Heads from arch "vit_small" (12, moco-v3's, not dim / 64), sin-cos recognised.
    const { name: _, ...inferred } = model.config;
    const { name: __, ...tiny } = TINY;
    assertEquals(inferred, tiny);
    assertParams(model, await baseEncoder("official", "module.base_encoder."));
    const x = tf.randomNormal([3, 8, 8, 3], 0, 1, "float32", 5) as tf.Tensor4D;
    const a = tf.tidy(() => vitForward(model, x).features);
    const b = tf.tidy(() => vitForward(again, x).features);
    assertEquals(a.shape, [3, 24]);
    assertEquals(a.dataSync(), b.dataSync());
    tf.dispose([x, a, b]);
  } finally {
    disposeViT(model);
    disposeViT(again);
  }
  assertEquals(tf.memory().numTensors, n0);
});

test("loadBackbone: another prefix (the momentum encoder), a plain timm state dict, MLP ratio", async () => {
  const momentum = await loadBackbone(`${dir}/official.pth.tar`, {
    prefix: "module.momentum_encoder.",
  });
  try {
    assertParams(momentum, await baseEncoder("official", "module.momentum_encoder."));
  } finally {
    disposeViT(momentum);
  }
  // timm names and a classifier head; no arch, so heads are given.
  const plain = await loadBackbone(`${dir}/plain.pth`, { config: { heads: 12 } });
  try {
    assertParams(plain, await baseEncoder("plain", ""));
    assertEquals(plain.config.posEmb, "sincos");
  } finally {
    disposeViT(plain);
  }
  // An MLP of ratio 2 (hidden 48) is inferred from fc1 and fc2.
  const narrow = await baseEncoder("plain", "");
  for (const b of [0, 1]) {
    narrow[`blocks.${b}.mlp.fc1.weight`] = f32([48, 24]);
    narrow[`blocks.${b}.mlp.fc1.bias`] = f32([48]);
    narrow[`blocks.${b}.mlp.fc2.weight`] = f32([24, 48]);
  }
  await writeSafetensors(`${dir}/narrow.safetensors`, narrow);
  const model = await loadBackbone(`${dir}/narrow.safetensors`, { config: { heads: 12 } });
  try {
    assertEquals(model.config.mlpRatio, 2);
    assertParams(model, narrow);
  } finally {
    disposeViT(model);
  }
  const e = await assertRejects(
    () => loadBackbone(`${dir}/official.pth.tar`, { prefix: "module.nothing." }),
  );
  assertStringIncludes(e.message, "no backbone tensors under the prefix");
});

/** A float32 tensor of `shape` with values 0.01 i. */
function f32(shape: number[]): SafeTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: "F32", shape, data: Float32Array.from({ length: n }, (_, i) => 0.01 * i) };
}

test("evaluate (deno task eval): kNN through the .pth.tar equals kNN through safetensors", async () => {
  const st = `${dir}/same-eval/backbone.safetensors`;
  await Deno.mkdir(`${dir}/same-eval`, { recursive: true });
  await writeSafetensors(st, await baseEncoder("official", "module.base_encoder."), {
    [CONFIG_KEY]: JSON.stringify(TINY),
  });
  const n0 = tf.memory().numTensors;
  // Synthetic data is gray: the RGB checkpoint gets it as RGB.
  const run = (checkpoint: string) =>
    evaluate({
      checkpoint,
      dataset: "synthetic",
      protocols: ["knn"],
      cacheDir: `${dir}/cache`,
      resultsFile: `${dir}/eval.csv`,
      print: () => {},
    });
  const a = await run(`${dir}/official.pth.tar`);
  const b = await run(st);
  assertEquals(tf.memory().numTensors, n0);
  assertEquals(a.map((r) => [r.run_id, r.protocol]), [
    ["official", "knn-20"],
    ["official", "knn-200"],
  ]);
  assertEquals(a.map((r) => [r.top1, r.top5]), b.map((r) => [r.top1, r.top5]));
  assert(a[0].top1 > 0.3, `kNN top-1 ${a[0].top1} is above chance (0.25)`);
});

/** `f` rejects with a one-line PthError containing `text`. */
async function oneLine(f: () => Promise<unknown>, text: string): Promise<void> {
  const e = await assertRejects(f, PthError);
  assertStringIncludes(e.message, text);
  assertFalse(e.message.includes("\n"), e.message);
}

test("refused, legacy, truncated and damaged files: one line each", async () => {
  await oneLine(() => readPth(`${dir}/namespace.pth`), "refusing the global argparse.Namespace");
  await oneLine(() => loadBackbone(`${dir}/evil.pth`), "refusing the global posix.system");
  assertFalse(await Deno.stat(`${dir}/pwned`).then(() => true, () => false));
  await oneLine(() => readPth(`${dir}/legacy.pth`), "legacy (pre-1.6) format");
  await oneLine(() => readPth(`${dir}/missing.pth`), "file not found");
  await oneLine(() => readPth(`${dir}/same.safetensors`), "not a PyTorch zip checkpoint");

  const good = await Deno.readFile(`${dir}/plain.pth`);
  for (const keep of [0.5, 0.99, (good.length - 10) / good.length]) {
    const path = `${dir}/cut.pth`;
    await Deno.writeFile(path, good.subarray(0, Math.floor(good.length * keep)));
    await oneLine(() => readPth(path), "truncated");
  }
  // The pickle damaged: the byte after PROTO 2 (the first opcode) and a byte inside it.
  const pkl = findEntry(good, "plain/data.pkl");
  for (const at of [pkl + 2, pkl + 40]) {
    const bad = good.slice();
    bad[at] = 0xff;
    await Deno.writeFile(`${dir}/bad.pth`, bad);
    await oneLine(() => readPth(`${dir}/bad.pth`), "corrupt");
  }
  // A storage missing: its name in the zip's directories renamed.
  const renamed = good.slice();
  const name = new TextEncoder().encode("plain/data/0");
  for (let i = 0; i + name.length <= renamed.length; i++) {
    if (name.every((b, j) => renamed[i + j] === b) && renamed[i + name.length] !== 0x30) {
      renamed[i + name.length - 1] = 0x5a; // "plain/data/Z"
    }
  }
  await Deno.writeFile(`${dir}/renamed.pth`, renamed);
  await oneLine(() => readPth(`${dir}/renamed.pth`), 'storage "0" is missing');
});

/** The offset of an entry's data in a zip (after its local header), found by its name. */
function findEntry(zip: Uint8Array, name: string): number {
  const n = new TextEncoder().encode(name);
  for (let i = 0; i + 30 < zip.length; i++) {
    if (zip[i] === 0x50 && zip[i + 1] === 0x4b && zip[i + 2] === 3 && zip[i + 3] === 4) {
      const view = new DataView(zip.buffer);
      const nameLen = view.getUint16(i + 26, true), extra = view.getUint16(i + 28, true);
      const got = zip.subarray(i + 30, i + 30 + nameLen);
      if (got.length === n.length && got.every((b, j) => b === n[j])) {
        return i + 30 + nameLen + extra;
      }
    }
  }
  throw new Error(`${name} not in the zip`);
}

test("stateDict: a saved object that is not a dict is refused with one line", async () => {
  const ckpt = decodePth(await Deno.readFile(`${dir}/plain.pth`));
  const e = assertThrows(() => stateDict({ ...ckpt, root: [1, 2] }, "x.pth"), PthError);
  assertStringIncludes(e.message, "not a dict");
  await Promise.resolve();
});

test("deno task eval --checkpoint evil.pth exits 2 with one line naming the global", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../../lib/cli/eval.ts", import.meta.url).pathname,
      "--checkpoint",
      `${dir}/evil.pth`,
      "--dataset",
      "synthetic",
      "--backend",
      "cpu",
      "--results",
      `${dir}/eval.csv`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr).trim();
  assertEquals(out.code, 2, err);
  assertEquals(err.split("\n").length, 1, err);
  assertStringIncludes(err, "refusing the global posix.system");
});
