/**
 * The one figure renderer (`lib/viz/render.ts`): the size rule, the Chromium lookup and its
 * environment variables, and that a missing or failing Chromium gives one line, never a throw.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import {
  chromiumLookup,
  DEFAULT_SIZE,
  figureHtml,
  figureSize,
  plotHtml,
  renderPng,
  sizedSpec,
} from "../../lib/viz/render.ts";

/** Runs `fn` with environment variables set (undefined: unset), restoring them after. */
async function withEnv(vars: Record<string, string | undefined>, fn: () => unknown) {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const set = (k: string, v: string | undefined) =>
    v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  try {
    for (const [k, v] of Object.entries(vars)) set(k, v);
    await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) set(k, v);
  }
}

const spec = { data: [{ type: "scatter", y: [1, 3, 2] }] };

Deno.test("figureSize: the caller's size, else the layout's, else 760 x 420", () => {
  assertEquals(DEFAULT_SIZE, { width: 760, height: 420 });
  assertEquals(figureSize(spec), { width: 760, height: 420 });
  assertEquals(figureSize({ ...spec, layout: { width: 1100, height: 520 } }), {
    width: 1100,
    height: 520,
  });
  assertEquals(figureSize({ ...spec, layout: { width: 1100, height: 520 } }, { height: 340 }), {
    width: 1100,
    height: 340,
  });
  assertEquals(figureSize({ ...spec, layout: { width: 0, height: 99.6 } }), {
    width: 760,
    height: 100,
  });
  // The drawn spec carries that size, and keeps the spec's own background.
  const s = sizedSpec({ ...spec, layout: { paper_bgcolor: "#eee" } }, { width: 300 });
  assertEquals([s.layout.width, s.layout.height, s.layout.paper_bgcolor], [300, 420, "#eee"]);
});

Deno.test("figureHtml and plotHtml: the page at the figure's size, no string ends the script", () => {
  const evil = { data: [{ y: [1], name: "</script><b>x" }], layout: { width: 400, height: 300 } };
  const page = figureHtml(evil, "a <title>");
  assertStringIncludes(page, 'style="width:400px;height:300px"');
  assertStringIncludes(page, "<title>a &#60;title&#62;</title>");
  assertEquals(page.match(/<\/script>/g)?.length, 2, "only the two script elements close");
  assert(!/<script[^>]*\bsrc=/i.test(page), "self-contained");
  const fragment = plotHtml(evil, { id: "f1" });
  assertStringIncludes(fragment, '<div id="f1"></div>');
  assertStringIncludes(fragment, "cdn.jsdelivr.net/npm/plotly.js-dist@4.1.1");
  assertStringIncludes(fragment, '"width":400');
});

Deno.test("chromiumLookup: VITSSL_CHROMIUM, then CHROMIUM (deprecated), and a named one is not replaced", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const a = `${dir}/chromium-a`, b = `${dir}/chromium-b`;
    await Deno.writeTextFile(a, "");
    await Deno.writeTextFile(b, "");
    await withEnv({ VITSSL_CHROMIUM: a, CHROMIUM: b }, () => {
      assertEquals(chromiumLookup().path, a);
      assertEquals(chromiumLookup(b).path, b, "an explicit path comes first");
    });
    await withEnv({ VITSSL_CHROMIUM: undefined, CHROMIUM: b }, () => {
      assertEquals(chromiumLookup().path, b);
    });
    await withEnv({ VITSSL_CHROMIUM: `${dir}/missing`, CHROMIUM: b }, () => {
      const r = chromiumLookup();
      assertEquals(r.path, null);
      assertEquals(r.wanted, `"${dir}/missing"`);
    });
    // Names are looked up on the PATH.
    await Deno.rename(a, `${dir}/chromium`);
    await withEnv({ VITSSL_CHROMIUM: undefined, CHROMIUM: undefined, PATH: dir }, () => {
      assertEquals(chromiumLookup().path, `${dir}/chromium`);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("renderPng: a missing, unrunnable or failing Chromium is one line, not a throw", async () => {
  const missing = await renderPng(spec, { chromium: "/nonexistent/chromium" });
  assertEquals(missing.png, undefined);
  assertStringIncludes(missing.warning!, '"/nonexistent/chromium" is not installed');
  assertStringIncludes(missing.warning!, "VITSSL_CHROMIUM");
  assert(!missing.warning!.includes("\n"), "one line");

  const dir = await Deno.makeTempDir();
  try {
    const noExec = `${dir}/not-executable`;
    await Deno.writeTextFile(noExec, "#!/bin/sh\n", { mode: 0o644 });
    const denied = await renderPng(spec, { chromium: noExec });
    assertEquals(denied.png, undefined);
    assertStringIncludes(denied.warning!, "no PNG: ");

    const failing = `${dir}/failing`;
    await Deno.writeTextFile(failing, "#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n", {
      mode: 0o755,
    });
    const failed = await renderPng(spec, { chromium: failing });
    assertEquals(failed.png, undefined);
    assertStringIncludes(failed.warning!, "exit 3");
    assertStringIncludes(failed.warning!, "cannot open display");

    const slow = `${dir}/slow`;
    await Deno.writeTextFile(slow, "#!/bin/sh\nexec sleep 30\n", { mode: 0o755 });
    const t0 = performance.now();
    const stopped = await renderPng(spec, { chromium: slow, timeoutSeconds: 0.5 });
    assert(performance.now() - t0 < 10_000, "the timeout stopped it");
    assertStringIncludes(stopped.warning!, "stopped after 0.5 s");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
