/**
 * Stopping the evaluation phases between batches (issue 21, item 3): `stopPoint` lets the event
 * loop turn (where Deno runs signal listeners) and throws `StoppedError` once the signal is set;
 * feature extraction, kNN, the linear probe and fine-tuning check it between batches and free
 * their tensors when stopped. The CLI's subprocess tests are tests/train/eval_stop_test.ts and
 * tests/cli/eval_stop_test.ts.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { StoppedError, stopPoint, type StopSignal, YIELD_MS } from "../../lib/core/stop.ts";
import { syntheticDataset } from "../../lib/data/synthetic.ts";
import { extractFeatures } from "../../lib/eval/features.ts";
import { knnClassify } from "../../lib/eval/knn.ts";
import { linearProbe } from "../../lib/eval/linear.ts";
import { finetune } from "../../lib/eval/finetune.ts";
import { createViT, disposeViT } from "../../lib/model/vit.ts";

await initBackend({ backend: "cpu" });

const VIT = {
  name: "vit_nano",
  imageSize: 28,
  patchSize: 7,
  channels: 1,
  dim: 16,
  depth: 1,
  heads: 2,
};

Deno.test("stopPoint: nothing without a signal or before stop; StoppedError naming the phase after", async () => {
  await stopPoint(undefined, "x");
  await stopPoint({ stop: false }, "x");
  const e = await assertRejects(() => stopPoint({ stop: true }, "the kNN vote"), StoppedError);
  assertEquals(e.message, "stopped during the kNN vote");
  assertEquals(e.phase, "the kNN vote");
});

Deno.test("stopPoint: a synchronous loop that calls it lets signal listeners (and timers) run", async () => {
  // A signal listener (or a timer due at once) runs only when the event loop turns; awaiting a
  // resolved promise, which is what tensor.data() is on cpu, wasm and native, does not turn it.
  let heard = false, fired = false;
  const onSignal = () => heard = true;
  Deno.addSignalListener("SIGUSR2", onSignal);
  try {
    Deno.kill(Deno.pid, "SIGUSR2");
    setTimeout(() => fired = true, 0);
    const busy = (ms: number) => {
      const t = performance.now();
      while (performance.now() - t < ms) { /* a batch of synchronous work */ }
    };
    for (let i = 0; i < 10; i++) {
      busy(YIELD_MS / 4);
      await Promise.resolve();
    }
    assert(!heard && !fired, "a microtask await does not turn the event loop");
    let i = 0;
    for (; i < 20 && !(heard && fired); i++) {
      busy(YIELD_MS / 4);
      await stopPoint({ stop: false }, "x");
    }
    assert(heard, `stopPoint let the signal listener run (${i})`);
    assert(fired, "stopPoint let the timer run");
  } finally {
    Deno.removeSignalListener("SIGUSR2", onSignal);
  }
});

/** Sets `signal.stop` after `n` calls of the returned callback. */
function stopAfter(signal: StopSignal, n: number) {
  let calls = 0;
  return () => {
    if (++calls >= n) signal.stop = true;
  };
}

Deno.test("extractFeatures and knnClassify stop between batches, free their tensors, cache nothing", async () => {
  const ds = syntheticDataset({ n: 64, seed: 1 });
  const model = createViT(VIT, 1);
  const dir = await Deno.makeTempDir({ prefix: "vitssl_stop_feat_" });
  try {
    const before = tf.memory().numTensors;
    const signal = { stop: false };
    const e = await assertRejects(
      () =>
        extractFeatures(model, ds, {
          batchSize: 16,
          signal,
          onProgress: stopAfter(signal, 2),
          cacheDir: dir,
          cacheKey: "k",
        }),
      StoppedError,
    );
    assertEquals(e.phase, "feature extraction (train split, 32/64 images)");
    assertEquals(tf.memory().numTensors, before);
    assertEquals([...Deno.readDirSync(dir)], [], "no cache file from a stopped extraction");

    const f = await extractFeatures(model, ds, { batchSize: 16 });
    const k = await assertRejects(
      () => knnClassify(f, f, { k: 5, chunkSize: 8, signal: { stop: true } }),
      StoppedError,
    );
    assertEquals(k.phase, "the kNN vote (0/64 queries)");
    assertEquals(tf.memory().numTensors, before);
  } finally {
    disposeViT(model);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("linearProbe and finetune stop between steps and free their tensors", async () => {
  const ds = syntheticDataset({ n: 64, seed: 2 });
  const model = createViT(VIT, 2);
  try {
    const f = await extractFeatures(model, ds, { batchSize: 32 });
    const before = tf.memory().numTensors;
    const signal = { stop: false };
    const e = await assertRejects(
      () => linearProbe(f, f, { epochs: 5, batchSize: 16, signal, onEpoch: stopAfter(signal, 2) }),
      StoppedError,
    );
    assertEquals(e.phase, "the linear probe (epoch 3/5)");
    assertEquals(tf.memory().numTensors, before);

    const ft = { stop: false };
    const g = await assertRejects(
      () =>
        finetune(model, ds, ds, {
          epochs: 3,
          batchSize: 32,
          signal: ft,
          onEpoch: stopAfter(ft, 1),
        }),
      StoppedError,
    );
    assertEquals(g.phase, "fine-tuning (epoch 2/3)");
    assertEquals(tf.memory().numTensors, before);
  } finally {
    disposeViT(model);
  }
});
