/**
 * `deno task pretrain` with no --preset runs the `default` preset: fmnist-long's recipe with
 * `--precision auto`, recorded as asked (auto) and as run (bf16 where the CPU has AVX512-BF16).
 */
import { assertEquals } from "@std/assert";

Deno.test("pretrain with no --preset: the default recipe (D 128, 10 epochs, lr 3e-3, auto precision)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-default-recipe-" });
  try {
    // A child process: precision is a process-wide switch of the native library.
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../lib/cli/pretrain.ts", import.meta.url).pathname,
        "--dataset",
        "synthetic",
        "--synthetic-size",
        "256",
        "--batch",
        "32",
        "--max-steps",
        "1",
        "--final-eval",
        "none",
        "--backend",
        "native",
        "--out",
        dir,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, text);
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    const c = saved.config;
    assertEquals(
      [c.preset, c.dim, c.epochs, c.baseLr, c.cropMin, c.warmupEpochs, c.precision],
      ["default", 128, 10, 3e-3, 0.4, 1, "auto"],
    );
    const hasBf16 = /\bavx512_bf16\b/.test(await Deno.readTextFile("/proc/cpuinfo"));
    assertEquals(saved.resolved.precision, hasBf16 ? "bf16" : "fp32");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
