/** Test-time augmentation: the views on the host, and evaluation averaging the logits of the views. */
import { CompactTransformer } from "../../lib/models/model.ts";
import { customConfig } from "../../lib/models/config.ts";
import { createSynthetic } from "../../lib/data/synthetic.ts";
import { normalizeImages } from "../../lib/data/dataset.ts";
import { evaluate, Scoreboard } from "../../lib/train/trainer.ts";
import { TEST_TIME_AUGMENTATIONS, ttaInputs, ttaViews, viewImages } from "../../lib/train/tta.ts";
import { assertEquals } from "../support/check.ts";

/** Element (i, c, y, x) of a view, written out independently of `viewImages`. */
function expectedView(
  src: Uint8Array,
  g: { channels: number; height: number; width: number },
  view: { flip: boolean; dy: number; dx: number },
): Uint8Array {
  const { channels: c, height: h, width: w } = g;
  const out = new Uint8Array(src.length);
  const count = src.length / (c * h * w);
  for (let i = 0; i < count; i++) {
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          // The shifted image's (y, x) shows the mirrored image's (y - dy, x - dx).
          const my = y - view.dy, mx = x - view.dx;
          const inside = my >= 0 && my < h && mx >= 0 && mx < w;
          const sx = view.flip ? w - 1 - mx : mx;
          out[((i * c + ch) * h + y) * w + x] = inside ? src[((i * c + ch) * h + my) * w + sx] : 0;
        }
      }
    }
  }
  return out;
}

Deno.test("ttaViews lists the views of each mode, the unchanged image first, and names bad modes", () => {
  assertEquals(ttaViews("none"), [{ flip: false, dy: 0, dx: 0 }]);
  assertEquals(ttaViews("flip"), [{ flip: false, dy: 0, dx: 0 }, { flip: true, dy: 0, dx: 0 }]);
  const six = ttaViews("flip-shift");
  assertEquals(six.length, 6);
  assertEquals(new Set(six.map((v) => `${v.flip}/${v.dy}/${v.dx}`)).size, 6, "distinct views");
  assertEquals(TEST_TIME_AUGMENTATIONS, ["none", "flip", "flip-shift"]);
  let message = "";
  try {
    // deno-lint-ignore no-explicit-any
    ttaViews("mirror" as any);
  } catch (e) {
    message = (e as Error).message;
  }
  if (!message.includes('"mirror"') || !message.includes("flip-shift")) {
    throw new Error(`message: ${message}`);
  }
});

Deno.test("viewImages mirrors and shifts every image and channel, filling with 0", () => {
  // Awkward geometry: 3 images of 2 channels × 3 × 5, no zero bytes in the source so a fill is visible.
  const g = { channels: 2, height: 3, width: 5 };
  const src = Uint8Array.from({ length: 3 * 2 * 3 * 5 }, (_, i) => 1 + ((i * 37) % 250));
  for (const view of ttaViews("flip-shift")) {
    assertEquals(
      Array.from(viewImages(src, g, view)),
      Array.from(expectedView(src, g, view)),
      JSON.stringify(view),
    );
  }
  // One hand-checked row: image 0, channel 0, row 0 is [1, 38, 75, 112, 149].
  assertEquals(Array.from(viewImages(src, g, { flip: true, dy: 0, dx: 0 }).subarray(0, 5)), [
    149,
    112,
    75,
    38,
    1,
  ]);
  assertEquals(Array.from(viewImages(src, g, { flip: false, dy: 0, dx: 1 }).subarray(0, 5)), [
    0,
    1,
    38,
    75,
    112,
  ]);
  assertEquals(Array.from(viewImages(src, g, { flip: false, dy: 1, dx: 0 }).subarray(0, 5)), [0, 0, 0, 0, 0]);
  // The identity view is a copy, not the caller's array.
  const same = viewImages(src, g, { flip: false, dy: 0, dx: 0 });
  same[0] = 0;
  assertEquals(src[0], 1);
  let message = "";
  try {
    viewImages(src.subarray(1), g, { flip: true, dy: 0, dx: 0 });
  } catch (e) {
    message = (e as Error).message;
  }
  if (!message.includes("2×3×5")) throw new Error(`message: ${message}`);
});

Deno.test("ttaInputs normalises each view of the mode, the image itself first", () => {
  // Two RGB 3×4 images, per-channel statistics that differ so a channel mix-up shows.
  const g = { channels: 3, height: 3, width: 4, mean: [0.1, 0.5, 0.9], std: [0.2, 0.3, 0.4] };
  const src = Uint8Array.from({ length: 2 * 3 * 3 * 4 }, (_, i) => (i * 53) % 256);
  for (const mode of TEST_TIME_AUGMENTATIONS) {
    const inputs = ttaInputs(src, g, mode);
    const views = ttaViews(mode);
    assertEquals(inputs.length, views.length, mode);
    for (const [v, view] of views.entries()) {
      const want = expectedView(src, g, view);
      for (let i = 0; i < want.length; i++) {
        const c = Math.floor(i / 12) % 3;
        const x = (want[i] / 255 - g.mean[c]) / g.std[c];
        if (!(Math.abs(inputs[v][i] - x) <= 1e-6)) {
          throw new Error(`${mode} view ${v} element ${i}: ${inputs[v][i]}, expected ${x}`);
        }
      }
    }
  }
});

Deno.test("evaluate with TTA scores the mean of the views' logits", async () => {
  const data = createSynthetic({ seed: 5, trainSize: 16, testSize: 37, size: 16, channels: 1 });
  const config = customConfig(
    { name: "tta_cct", family: "cct", layers: 1, heads: 2, dim: 16, mlpRatio: 2 },
    { imgSize: 16, inChannels: 1, numClasses: data.classes.length, convLayers: 1 },
  );
  const model = await CompactTransformer.create(config, { seed: 7 });
  try {
    const shape = [data.test.length, 1, 16, 16] as const;
    for (const mode of ["flip", "flip-shift"] as const) {
      const views = ttaViews(mode);
      const mean = new Float32Array(data.test.length * data.classes.length);
      for (const view of views) {
        const logits = await model.forward(
          normalizeImages(expectedView(data.test.images, data, view), data),
          shape,
        );
        for (let i = 0; i < mean.length; i++) mean[i] += logits[i] / views.length;
      }
      const expected = new Scoreboard(data.classes.length);
      expected.add(mean, data.test.labels);
      const want = expected.result();
      // Batches of 8 (37 images: a partial last batch), so views are formed per batch.
      const got = await evaluate(model, data, data.test, 8, { tta: mode });
      assertEquals(got.count, 37);
      assertEquals(got.top1, want.top1, `${mode} top-1`);
      assertEquals(got.confusion, want.confusion, `${mode} confusion`);
      if (!(Math.abs(got.loss - want.loss) < 1e-5)) {
        throw new Error(`${mode} loss ${got.loss}, expected ${want.loss}`);
      }
      // The views matter: a random model is not mirror-symmetric, so one view alone scores another loss.
      const plain = await evaluate(model, data, data.test, 8);
      if (!(Math.abs(plain.loss - got.loss) > 1e-4)) {
        throw new Error(`${mode}: same loss as one view (${plain.loss})`);
      }
    }
  } finally {
    model.destroy();
  }
});
