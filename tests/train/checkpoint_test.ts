/**
 * Tests of lib/train/checkpoint.ts: bit-exact backbone round trips, loading a timm-layout file whose
 * bytes are built here from the safetensors spec (not with our writer), prefix stripping,
 * mismatch reports, and the refusal to write non-finite weights.
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import {
  CheckpointError,
  loadBackbone,
  saveBackbone,
  saveTensors,
} from "../../lib/train/checkpoint.ts";
import {
  createMomentumNetworks,
  disposeMomentumNetworks,
  momentumState,
} from "../../lib/methods/two_view.ts";
import { createRng } from "../../lib/core/rng.ts";
import { createViT, disposeViT, type ViT, vitForward } from "../../lib/model/vit.ts";

await initBackend({ backend: "cpu" });

// ---------- a safetensors writer built from the spec, for test files ----------

/** Tensors as plain arrays: name -> [shape, values]. */
type Spec = Record<string, [number[], Float32Array]>;

/**
 * The bytes of a safetensors file: u64 little-endian header length, the JSON header
 * `{name: {dtype: "F32", shape, data_offsets: [begin, end]}}`, then the raw little-endian f32 data.
 */
function safetensorsBytes(tensors: Spec, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header["__metadata__"] = metadata;
  let offset = 0;
  for (const [name, [shape, values]] of Object.entries(tensors)) {
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + 4 * values.length] };
    offset += 4 * values.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const [, [, values]] of Object.entries(tensors)) {
    for (const v of values) {
      view.setFloat32(pos, v, true);
      pos += 4;
    }
  }
  return out;
}

/** A tiny timm ViT state dict: D 8 (default), depth 1, 2 heads, patch 4, image 8, 3 channels, + timm head. */
function timmTinyViT(seed = 0, D = 8): Spec {
  const rng = createRng(seed);
  const rand = (shape: number[]): [number[], Float32Array] => {
    const n = shape.reduce((a, b) => a * b, 1);
    return [shape, Float32Array.from({ length: n }, () => rng.normal())];
  };
  const C = 3, p = 4, N = 4, H = 4 * D;
  return {
    cls_token: rand([1, 1, D]),
    pos_embed: rand([1, N + 1, D]),
    "patch_embed.proj.weight": rand([D, C, p, p]),
    "patch_embed.proj.bias": rand([D]),
    "blocks.0.norm1.weight": rand([D]),
    "blocks.0.norm1.bias": rand([D]),
    "blocks.0.attn.qkv.weight": rand([3 * D, D]),
    "blocks.0.attn.qkv.bias": rand([3 * D]),
    "blocks.0.attn.proj.weight": rand([D, D]),
    "blocks.0.attn.proj.bias": rand([D]),
    "blocks.0.norm2.weight": rand([D]),
    "blocks.0.norm2.bias": rand([D]),
    "blocks.0.mlp.fc1.weight": rand([H, D]),
    "blocks.0.mlp.fc1.bias": rand([H]),
    "blocks.0.mlp.fc2.weight": rand([D, H]),
    "blocks.0.mlp.fc2.bias": rand([D]),
    "norm.weight": rand([D]),
    "norm.bias": rand([D]),
    // timm's classifier: not part of the backbone, must be ignored.
    "head.weight": rand([10, D]),
    "head.bias": rand([10]),
  };
}

function withPrefix(spec: Spec, prefix: string): Spec {
  return Object.fromEntries(Object.entries(spec).map(([k, v]) => [prefix + k, v]));
}

async function tempFile(dir: string, name: string, bytes: Uint8Array): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.writeFile(path, bytes);
  return path;
}

/** Every backbone tensor equals the file's, bit for bit; the classifier head is absent. */
function assertLoaded(model: ViT, spec: Spec): void {
  const all = { ...model.params, ...model.buffers };
  const expected = Object.keys(spec).filter((k) => !k.startsWith("head.")).sort();
  assertEquals(Object.keys(all).sort(), expected);
  for (const name of expected) {
    const [shape, values] = spec[name];
    assertEquals(all[name].shape, shape, name);
    assertEquals(all[name].dataSync(), values, name);
  }
}

/** Layer norm of a vector, with weight and bias. */
function layerNorm(x: number[], w: ArrayLike<number>, b: ArrayLike<number>, eps = 1e-6): number[] {
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  const variance = x.reduce((s, v) => s + (v - mean) ** 2, 0) / x.length;
  return x.map((v, i) => ((v - mean) / Math.sqrt(variance + eps)) * w[i] + b[i]);
}

// ---------- round trips ----------

Deno.test("saveBackbone -> loadBackbone is bit-exact (params, BN buffers, config)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = createViT({
      name: "vit_nano",
      imageSize: 8,
      patchSize: 4,
      channels: 3,
      posEmb: "learned",
      mlpNorm: "batchnorm",
    }, 7);
    // Non-trivial buffers and biases, so that a zero-init could not pass by accident.
    for (const v of [...Object.values(model.params), ...Object.values(model.buffers)]) {
      v.assign(tf.tidy(() => tf.add(v, tf.randomNormal(v.shape, 0, 0.1, "float32", 3))));
    }
    await saveBackbone(`${dir}/b.safetensors`, model);
    const n0 = tf.memory().numTensors;
    const again = await loadBackbone(`${dir}/b.safetensors`);
    assertEquals(again.config, model.config);
    assertEquals(again.frozen, model.frozen);
    const a = { ...model.params, ...model.buffers }, b = { ...again.params, ...again.buffers };
    assertEquals(Object.keys(b).sort(), Object.keys(a).sort());
    for (const k of Object.keys(a)) assertEquals(b[k].dataSync(), a[k].dataSync(), k);
    disposeViT(again);
    assertEquals(tf.memory().numTensors, n0);
    disposeViT(model);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadBackbone reads the online backbone out of a full MoCo training checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const vit = { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1, depth: 1 };
    const moco = createMomentumNetworks(vit, { hidden: 8, outDim: 4 }, 1);
    // Make the momentum encoder differ from the online one: the loader must pick base_encoder.
    for (const v of Object.values(moco.momentumBackbone.params)) {
      v.assign(tf.tidy(() => tf.add(v, 1)));
    }
    await saveTensors(`${dir}/ckpt.safetensors`, momentumState(moco), {
      "vitssl.vit_config": JSON.stringify(moco.backbone.config),
    });
    const model = await loadBackbone(`${dir}/ckpt.safetensors`);
    assertEquals(Object.keys(model.params).sort(), Object.keys(moco.backbone.params).sort());
    for (const [k, v] of Object.entries(moco.backbone.params)) {
      assertEquals(model.params[k].dataSync(), v.dataSync(), k);
    }
    disposeViT(model);
    disposeMomentumNetworks(moco);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------- timm files built by hand ----------

Deno.test("a hand-built timm file loads with every value in its place; head.* is ignored", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const spec = timmTinyViT(1);
    const path = await tempFile(dir, "timm.safetensors", safetensorsBytes(spec, { format: "pt" }));
    const model = await loadBackbone(path, { config: { heads: 2 } });
    const c = model.config;
    assertEquals(
      [c.dim, c.depth, c.heads, c.patchSize, c.imageSize, c.channels, c.posEmb, c.pool, c.mlpNorm],
      [8, 1, 2, 4, 8, 3, "learned", "cls", "layernorm"],
    );
    assertLoaded(model, spec);
    disposeViT(model);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config fields given to loadBackbone refine the inferred ones (heads of width 96)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const spec = timmTinyViT(7, 96);
    const path = await tempFile(dir, "w96.safetensors", safetensorsBytes(spec));
    // dim / 64 = 1.5 heads cannot be right: the error says how to fix it.
    const e = await assertRejects(() => loadBackbone(path), CheckpointError);
    assertStringIncludes(e.message, "heads");
    const model = await loadBackbone(path, { config: { heads: 3 } });
    assertEquals([model.config.dim, model.config.heads], [96, 3]);
    assertLoaded(model, spec);
    disposeViT(model);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("conv kernel element weight[d, c, i, j] multiplies pixel (row i, col j, channel c)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const spec = timmTinyViT(2);
    // Blocks as identities (zero residual branches), so the tokens after the blocks are the
    // patch embeddings + pos_embed, and the output is the final LN of those.
    for (const k of ["attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias"]) {
      spec[`blocks.0.${k}`][1].fill(0);
    }
    const path = await tempFile(dir, "timm.safetensors", safetensorsBytes(spec));
    const model = await loadBackbone(path, { config: { heads: 2 } });
    const [, W] = spec["patch_embed.proj.weight"]; // [D=8, C=3, p=4, p=4]
    const bias = spec["patch_embed.proj.bias"][1], pos = spec["pos_embed"][1];
    const g = spec["norm.weight"][1], beta = spec["norm.bias"][1];
    const D = 8, C = 3, p = 4, S = 8;
    const w = (d: number, c: number, i: number, j: number) => W[((d * C + c) * p + i) * p + j];
    /** Expected final tokens [5][D] for an image [S][S][C], computed as a conv by hand. */
    const expectedTokens = (img: Float32Array) => {
      const out: number[][] = [];
      for (let t = 0; t < 4; t++) {
        const r0 = Math.floor(t / 2) * p, c0 = (t % 2) * p;
        const e = Array.from({ length: D }, (_, d) => {
          let s = bias[d] + pos[(1 + t) * D + d];
          for (let c = 0; c < C; c++) {
            for (let i = 0; i < p; i++) {
              for (let j = 0; j < p; j++) s += w(d, c, i, j) * img[((r0 + i) * S + c0 + j) * C + c];
            }
          }
          return s;
        });
        out.push(layerNorm(e, g, beta));
      }
      return out;
    };
    const tokensOf = (img: Float32Array) =>
      tf.tidy(() => {
        const x = tf.tensor4d(img, [1, S, S, C]);
        const { tokens } = vitForward(model, x, { returnTokens: true });
        return tokens!.arraySync()[0].slice(1);
      });

    // One-hot images: pixel (row i, col j, channel c) of the first patch gives token 1 =
    // LN(weight[:, c, i, j] + bias + pos_embed[1]); in the second patch (col 4 + j), token 2.
    for (const [c, i, j] of [[0, 0, 0], [2, 1, 3], [1, 3, 2]]) {
      const img = new Float32Array(S * S * C);
      img[(i * S + j) * C + c] = 1;
      const got = tokensOf(img);
      const direct = layerNorm(
        Array.from({ length: D }, (_, d) => w(d, c, i, j) + bias[d] + pos[D + d]),
        g,
        beta,
      );
      for (let d = 0; d < D; d++) {
        assertAlmostEquals(got[0][d], direct[d], 1e-4, `[${c},${i},${j}]`);
      }
      const img2 = new Float32Array(S * S * C);
      img2[(i * S + p + j) * C + c] = 1;
      const got2 = tokensOf(img2);
      const direct2 = layerNorm(
        Array.from({ length: D }, (_, d) => w(d, c, i, j) + bias[d] + pos[2 * D + d]),
        g,
        beta,
      );
      for (let d = 0; d < D; d++) assertAlmostEquals(got2[1][d], direct2[d], 1e-4);
    }
    // A random image: every patch token equals the conv computed by hand.
    const rng = createRng(9);
    const img = Float32Array.from({ length: S * S * C }, () => rng.normal());
    const got = tokensOf(img), exp = expectedTokens(img);
    for (let t = 0; t < 4; t++) {
      for (let d = 0; d < D; d++) assertAlmostEquals(got[t][d], exp[t][d], 1e-3, `token ${t}`);
    }
    disposeViT(model);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the module.base_encoder. prefix is stripped, automatically or when given", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const spec = timmTinyViT(3);
    const other = timmTinyViT(4);
    // An official-style checkpoint: online and momentum encoders, projector and predictor.
    const file: Spec = {
      ...withPrefix(spec, "module.base_encoder."),
      ...withPrefix(other, "module.momentum_encoder."),
      "module.base_encoder.head.0.weight": [[16, 8], new Float32Array(128)],
      "module.predictor.0.weight": [[16, 4], new Float32Array(64)],
    };
    delete file["module.base_encoder.head.weight"];
    delete file["module.base_encoder.head.bias"];
    const path = await tempFile(dir, "official.safetensors", safetensorsBytes(file));
    for (const opts of [{}, { prefix: "module.base_encoder." }]) {
      const model = await loadBackbone(path, { ...opts, config: { heads: 2 } });
      assertLoaded(model, spec);
      disposeViT(model);
    }
    // A prefix that auto-detection does not know works when given.
    const path2 = await tempFile(
      dir,
      "enc.safetensors",
      safetensorsBytes(withPrefix(spec, "enc.")),
    );
    const model = await loadBackbone(path2, { prefix: "enc.", config: { heads: 2 } });
    assertLoaded(model, spec);
    disposeViT(model);
    // A wrong prefix: nothing under it, and the error says so.
    const e = await assertRejects(
      () => loadBackbone(path, { prefix: "model.", config: { heads: 2 } }),
      CheckpointError,
    );
    assertStringIncludes(e.message, 'prefix "model."');
    assertStringIncludes(e.message, "module.base_encoder.");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------- mismatches ----------

Deno.test("mismatched names and shapes give one CheckpointError listing each", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const spec = timmTinyViT(5);
    spec["blocks.0.attn.qkv.wieght"] = spec["blocks.0.attn.qkv.weight"];
    delete spec["blocks.0.attn.qkv.weight"];
    spec["blocks.0.mlp.fc1.weight"] = [[16, 8], new Float32Array(128)];
    const path = await tempFile(dir, "bad.safetensors", safetensorsBytes(spec));
    const n0 = tf.memory().numTensors;
    const e = await assertRejects(
      () => loadBackbone(path, { config: { heads: 2 } }),
      CheckpointError,
    );
    assertEquals(tf.memory().numTensors, n0, "the half-built model is freed");
    assertStringIncludes(e.message, path);
    assertStringIncludes(e.message, "3 problem(s)");
    assertStringIncludes(e.message, "missing blocks.0.attn.qkv.weight [24, 8]");
    assertStringIncludes(e.message, "unexpected blocks.0.attn.qkv.wieght [24, 8]");
    assertStringIncludes(
      e.message,
      "blocks.0.mlp.fc1.weight: file has [16, 8], model expects [32, 8]",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a checkpoint of another architecture lists the mismatched names and shapes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // ViT-BN with patch 4 and depth 2, saved by us; loaded as a LayerNorm ViT, patch 2, depth 1.
    const model = createViT({
      name: "vit_nano",
      imageSize: 8,
      patchSize: 4,
      channels: 1,
      mlpNorm: "batchnorm",
    });
    await saveBackbone(`${dir}/bn.safetensors`, model);
    disposeViT(model);
    const n0 = tf.memory().numTensors;
    const e = await assertRejects(
      () =>
        loadBackbone(`${dir}/bn.safetensors`, {
          config: { patchSize: 2, depth: 1, mlpNorm: "layernorm" },
        }),
      CheckpointError,
    );
    assertEquals(tf.memory().numTensors, n0);
    assertStringIncludes(e.message, "another architecture");
    // 2 shapes + 2 BN buffers of block 0 + 14 tensors of block 1.
    assertStringIncludes(e.message, "(18 problem(s))");
    assertStringIncludes(
      e.message,
      "patch_embed.proj.weight: file has [32, 1, 4, 4], model expects [32, 1, 2, 2]",
    );
    assertStringIncludes(e.message, "pos_embed: file has [1, 5, 32], model expects [1, 17, 32]");
    assertStringIncludes(e.message, "unexpected blocks.0.norm2.running_mean [32]");
    assertStringIncludes(e.message, "unexpected blocks.0.norm2.running_var [32]");
    assertStringIncludes(e.message, "unexpected blocks.1.attn.qkv.weight [96, 32]");
    assertStringIncludes(e.message, "unexpected blocks.1.norm2.running_var [32]");
    // Long lists are cut, with a count of the rest.
    const e4 = await assertRejects(
      () => loadBackbone(`${dir}/bn.safetensors`, { config: { dim: 16, heads: 2, depth: 1 } }),
      CheckpointError,
    );
    assertStringIncludes(e4.message, "(34 problem(s))");
    assertStringIncludes(e4.message, "... and 4 more");

    // A file that is not a ViT at all (a ResNet's names): no patch embedding to infer from.
    const resnet = await tempFile(
      dir,
      "resnet.safetensors",
      safetensorsBytes({
        "conv1.weight": [[4, 3, 3, 3], new Float32Array(108)],
        "fc.weight": [[10, 4], new Float32Array(40)],
      }),
    );
    const e2 = await assertRejects(() => loadBackbone(resnet), CheckpointError);
    assertStringIncludes(e2.message, "patch_embed.proj.weight");
    assertStringIncludes(e2.message, "pass a config");
    // With a config, the names are listed instead.
    const e3 = await assertRejects(
      () =>
        loadBackbone(resnet, {
          config: { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 3, depth: 1 },
        }),
      CheckpointError,
    );
    assertStringIncludes(e3.message, "unexpected conv1.weight [4, 3, 3, 3]");
    assertStringIncludes(e3.message, "missing patch_embed.proj.weight [32, 3, 4, 4]");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------- non-finite weights ----------

Deno.test("saveTensors refuses NaN / Inf weights and leaves the previous file intact", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/ckpt.safetensors`;
    const good = { a: tf.tensor1d([1, 2, 3]), b: tf.tensor2d([[4, 5]]) };
    await saveTensors(path, good, { step: "4" });
    const before = await Deno.readFile(path);
    for (const badValue of [NaN, Infinity, -Infinity]) {
      const bad = { a: tf.tensor1d([1, badValue, 3]), b: tf.tensor2d([[4, 5]]) };
      const e = await assertRejects(() => saveTensors(path, bad, { step: "6" }), CheckpointError);
      assertStringIncludes(e.message, "non-finite");
      assertStringIncludes(e.message, " a");
      assert(!e.message.includes(" b"), "only the bad tensor is named");
      assertStringIncludes(e.message, "previous checkpoint is kept");
      tf.dispose(Object.values(bad));
    }
    assertEquals(await Deno.readFile(path), before, "the old file is unchanged");
    const names = [...Deno.readDirSync(dir)].map((d) => d.name);
    assertEquals(names, ["ckpt.safetensors"], "no temp file left behind");
    tf.dispose(Object.values(good));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt checkpoint file fails with an error naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bytes = safetensorsBytes(timmTinyViT(6));
    const path = await tempFile(dir, "torn.safetensors", bytes.subarray(0, bytes.length - 100));
    const e = await assertRejects(() => loadBackbone(path));
    assertInstanceOf(e, Error);
    assertStringIncludes(e.message, path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
