/**
 * PyTorch beside the bench (lib/bench/peer.ts) and the CPU's name (lib/bench/cpu.ts): parsing by
 * hand-written inputs, the ratios by hand, the reference script run through stand-in interpreters
 * (missing, without torch, failing, answering), and the real one where Debian's torch is
 * installed.
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { cpuLabel, parseCpuinfo } from "../../lib/bench/cpu.ts";
import {
  blasWarning,
  parsePeerLine,
  peerLine,
  type PeerRun,
  PeerUnavailable,
  runTorchPeer,
} from "../../lib/bench/peer.ts";
import { commandStatus, requireTool } from "../_helpers/system_tools.ts";

const CPUINFO = [
  "processor\t: 0",
  "vendor_id\t: AuthenticAMD",
  "cpu family\t: 25",
  "model\t\t: 17",
  "model name\t: AMD EPYC",
  "flags\t\t: fpu avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16",
  "",
  "processor\t: 1",
  "cpu family\t: 25",
  "model\t\t: 17",
  "model name\t: AMD EPYC",
  "flags\t\t: fpu avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 amx_tile amx_bf16",
  "",
].join("\n");

Deno.test("parseCpuinfo: name, family, model, CPUs and features of the first processor", () => {
  const c = parseCpuinfo(CPUINFO);
  assertEquals(c, {
    name: "AMD EPYC",
    family: 25,
    model: 17,
    cpus: 2,
    // The second processor's AMX flags do not count: the first one's flags are read.
    features: ["AVX2", "AVX-512", "AVX512-BF16"],
  });
  assertEquals(cpuLabel(c), "AMD EPYC (family 25, model 17), 2 CPUs, AVX2, AVX-512, AVX512-BF16");
  // A feature needs every flag: AVX-512 without avx512vl is not the backend's AVX-512.
  const partial = parseCpuinfo("processor : 0\nflags : avx2 fma avx512f avx512bw avx512dq\n");
  assertEquals(partial.features, ["AVX2"]);
  assertEquals(cpuLabel(partial), "unknown CPU, 1 CPU, AVX2");
  assertEquals(cpuLabel(parseCpuinfo("")), "unknown CPU");
});

const run = (precision: string, images_per_s: number): PeerRun => ({
  workload: "tiny32",
  precision,
  threads: 2,
  batch: 64,
  steps: 5,
  images_per_s,
  torch: "1.13.1",
  blas: [],
});

Deno.test("peerLine: vitssl's speed as a multiple of each PyTorch run, by hand", () => {
  assertEquals(
    peerLine("tiny32", "bf16", 45, [run("fp32", 9), run("bf16-autocast", 50)]),
    "tiny32 beside PyTorch 1.13.1 (2 threads, same run): fp32 9.0, autocast bf16 50.0 images/s; " +
      "vitssl bf16 45.0: 5.00x PyTorch fp32, 0.90x PyTorch autocast",
  );
  assertEquals(peerLine("tiny32", "fp32", 45, []), "tiny32: no PyTorch run");
});

Deno.test("parsePeerLine reads the script's fields and refuses other lines", () => {
  const p = parsePeerLine(
    JSON.stringify({ ...run("bf16-autocast", 12.5), blas: ["/x/libblas.so.3"], extra: 1 }),
  );
  assertEquals(p, { ...run("bf16-autocast", 12.5), blas: ["/x/libblas.so.3"] });
  // A line from before --bf16 existed has no precision: float32.
  assertEquals(
    parsePeerLine(JSON.stringify({ ...run("", 3), precision: undefined })).precision,
    "fp32",
  );
  let threw = false;
  try {
    parsePeerLine('{"compile_error": "x"}');
  } catch (e) {
    threw = true;
    assertStringIncludes(String(e), "not a reference step result");
  }
  assert(threw);
});

Deno.test("blasWarning names the pthread OpenBLAS and the command that replaces it", () => {
  assertEquals(blasWarning(["/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3"]), null);
  const w = blasWarning([
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so",
  ]);
  assertStringIncludes(w!, "update-alternatives --set libopenblas.so.0-x86_64-linux-gnu");
});

/** A stand-in interpreter: a shell script in a temporary directory. */
async function fakePython(body: string): Promise<{ path: string; dir: string }> {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/python3`;
  await Deno.writeTextFile(path, `#!/bin/sh\n${body}\n`);
  await Deno.chmod(path, 0o755);
  return { path, dir };
}

Deno.test("runTorchPeer: a missing interpreter or torch is one line saying what to install", async () => {
  const e1 = await assertRejects(
    () =>
      runTorchPeer({ workload: "small28", threads: 2, bf16: false, python: "/no/such/python3" }),
    PeerUnavailable,
  );
  assertStringIncludes(e1.message, "no /no/such/python3");
  assertStringIncludes(e1.message, "apt-get install python3-torch");
  assert(!e1.message.includes("\n"));
  const noTorch = await fakePython(
    `echo "Traceback (most recent call last):" >&2\n` +
      `echo "ModuleNotFoundError: No module named 'torch'" >&2\nexit 1`,
  );
  try {
    const e2 = await assertRejects(
      () => runTorchPeer({ workload: "small28", threads: 2, bf16: true, python: noTorch.path }),
      PeerUnavailable,
    );
    assertStringIncludes(e2.message, "has no torch");
  } finally {
    await Deno.remove(noTorch.dir, { recursive: true });
  }
});

Deno.test("runTorchPeer: passes the run's settings and reads the last line", async () => {
  // Echoes its arguments into the result, after a progress line on stdout.
  const echo = await fakePython(
    `echo "progress"\n` +
      `printf '{"workload":"small28","precision":"fp32","threads":2,"batch":8,"steps":1,` +
      `"images_per_s":7.5,"torch":"%s","blas":[]}\\n' "$*"`,
  );
  const fail = await fakePython(`echo "RuntimeError: boom" >&2\nexit 3`);
  try {
    const p = await runTorchPeer({
      workload: "small28",
      threads: 2,
      bf16: true,
      steps: 1,
      warmup: 0,
      batch: 8,
      mode: "step",
      python: echo.path,
    });
    assertEquals(p.images_per_s, 7.5);
    const args = p.torch.split(" ");
    assert(args[0].endsWith("tests/reference/moco_step_torch.py"), args[0]);
    assertEquals(args.slice(1), [
      "--workload",
      "small28",
      "--threads",
      "2",
      "--steps",
      "1",
      "--warmup",
      "0",
      "--batch",
      "8",
      "--mode",
      "step",
      "--bf16",
    ]);
    const e = await assertRejects(
      () => runTorchPeer({ workload: "small28", threads: 2, bf16: false, python: fail.path }),
      Error,
    );
    assertStringIncludes(e.message, "(exit 3): RuntimeError: boom");
  } finally {
    await Deno.remove(echo.dir, { recursive: true });
    await Deno.remove(fail.dir, { recursive: true });
  }
});

const skipTorch = requireTool(
  "real PyTorch peer",
  await commandStatus("/usr/bin/python3", ["-c", "import torch"]),
  "apt-get install python3-torch (Debian's /usr/bin/python3 must import torch)",
);

Deno.test({
  name: "runTorchPeer: Debian's PyTorch runs one step in float32 and under autocast",
  ignore: skipTorch,
  fn: async () => {
    for (const bf16 of [false, true]) {
      const p = await runTorchPeer({
        workload: "small28",
        threads: 1,
        bf16,
        steps: 1,
        warmup: 0,
        batch: 8,
        python: "/usr/bin/python3",
      });
      assertEquals([p.workload, p.precision, p.batch, p.steps, p.threads], [
        "small28",
        bf16 ? "bf16-autocast" : "fp32",
        8,
        1,
        1,
      ]);
      assert(p.images_per_s > 0);
    }
  },
});
