/**
 * Test-time augmentation: evaluation averages the logits of a few fixed views of each image. The views are the
 * augmentations the recipe trains with (horizontal flip, one-pixel padded crops), so they only help a model
 * trained with them, and hurt where a flip changes the class (digits).
 */

import type { CompactTransformer } from "../models/model.ts";
import { type Dataset, normalizeImages } from "../data/dataset.ts";

/**
 * Which views {@link ttaViews} returns:
 * - `"none"`: the image alone;
 * - `"flip"`: the image and its horizontal mirror;
 * - `"flip-shift"`: those and the image moved one pixel up, down, left and right (zero fill, like the padded
 *   crop of training): six views.
 */
export type TestTimeAugmentation = "none" | "flip" | "flip-shift";

/** Every {@link TestTimeAugmentation}, for validation and help text. */
export const TEST_TIME_AUGMENTATIONS: readonly TestTimeAugmentation[] = ["none", "flip", "flip-shift"];

/** One view: mirror first, then move the content `dy` rows down and `dx` columns right. */
export interface View {
  flip: boolean;
  dy: number;
  dx: number;
}

/** The views of a mode, the unchanged image first. */
export function ttaViews(mode: TestTimeAugmentation): View[] {
  const views: View[] = [{ flip: false, dy: 0, dx: 0 }];
  if (mode === "none") return views;
  if (mode !== "flip" && mode !== "flip-shift") {
    throw new RangeError(
      `test-time augmentation "${mode}": expected one of ${TEST_TIME_AUGMENTATIONS.join(", ")}`,
    );
  }
  views.push({ flip: true, dy: 0, dx: 0 });
  if (mode === "flip-shift") {
    for (const [dy, dx] of [[-1, 0], [1, 0], [0, -1], [0, 1]]) views.push({ flip: false, dy, dx });
  }
  return views;
}

/**
 * One view of a batch of `channels` × `height` × `width` byte images (NCHW, 0..255), as a new array: pixels
 * moved in from outside the image are 0.
 */
export function viewImages(
  images: Uint8Array,
  geometry: { channels: number; height: number; width: number },
  view: View,
): Uint8Array {
  const { channels, height: h, width: w } = geometry;
  const plane = h * w;
  if (images.length % (channels * plane) !== 0) {
    throw new TypeError(
      `viewImages: ${images.length} bytes is not a whole number of ${channels}×${h}×${w} images`,
    );
  }
  const out = new Uint8Array(images.length);
  for (let p = 0; p < images.length; p += plane) {
    for (let y = 0; y < h; y++) {
      const sy = y - view.dy;
      if (sy < 0 || sy >= h) continue;
      for (let x = 0; x < w; x++) {
        const sx = x - view.dx;
        if (sx < 0 || sx >= w) continue;
        out[p + y * w + x] = images[p + sy * w + (view.flip ? w - 1 - sx : sx)];
      }
    }
  }
  return out;
}

/**
 * The model inputs of the views of `mode`: each view of the byte images, normalised, as one float32 NCHW array
 * laid out like `images` (the image itself first). {@link ttaLogits} runs them one forward pass each; a caller
 * that batches its own forward passes (the HTTP server example) averages the logits itself.
 *
 * @param images `n` uint8 CHW images back to back, at the model's input geometry (e.g. from `toUint8CHW`).
 * @param data Geometry and per-channel normalisation, e.g. the {@link Dataset} the images come from.
 * @param mode Which views (default "none": the image alone).
 * @returns One float32 array per view, each `images.length` long.
 * @throws {RangeError} For an unknown mode. {@link TypeError} If `images` is not whole images of that geometry.
 *
 * @example The two inputs of flip TTA for one image
 * ```ts
 * import { loadDataset, ttaInputs } from "@compact-transformers/cct";
 *
 * const data = await loadDataset("synthetic:gray28");
 * const [plain, mirrored] = ttaInputs(data.test.images.subarray(0, 28 * 28), data, "flip");
 * console.log(plain[0] === mirrored[27]); // true: the first pixel of row 0 is the last of its mirror
 * ```
 */
export function ttaInputs(
  images: Uint8Array,
  data: Pick<Dataset, "channels" | "height" | "width" | "mean" | "std">,
  mode: TestTimeAugmentation = "none",
): Float32Array[] {
  return ttaViews(mode).map((view, i) =>
    normalizeImages(i === 0 ? images : viewImages(images, data, view), data)
  );
}

/**
 * The logits of byte images averaged over the views of `mode`: one forward pass per view, the image itself first.
 * `evaluate` and `cli.ts predict` score with it.
 *
 * @param model The model, in evaluation mode.
 * @param images `n` uint8 CHW images back to back, at the model's input geometry (e.g. from `toUint8CHW`).
 * @param data Geometry and per-channel normalisation, e.g. the {@link Dataset} the images come from.
 * @param mode Which views to average (default "none": one plain forward pass).
 * @returns `n × classes` logits, row-major.
 *
 * @example Logits of a batch, averaged with their mirror images
 * ```ts
 * import { CompactTransformer, loadDataset, ttaLogits } from "@compact-transformers/cct";
 *
 * const data = await loadDataset("synthetic:gray28");
 * const model = await CompactTransformer.create("cct_2_3x2_32", { imgSize: 28, inChannels: 1 });
 * const eight = data.test.images.subarray(0, 8 * 28 * 28);
 * const logits = await ttaLogits(model, eight, data, "flip");
 * console.log(logits.length); // 8 × the number of classes
 * ```
 */
export async function ttaLogits(
  model: CompactTransformer,
  images: Uint8Array,
  data: Pick<Dataset, "channels" | "height" | "width" | "mean" | "std">,
  mode: TestTimeAugmentation = "none",
): Promise<Float32Array> {
  const inputs = ttaInputs(images, data, mode);
  const count = images.length / (data.channels * data.height * data.width);
  const shape = [count, data.channels, data.height, data.width] as const;
  const logits = await model.forward(inputs[0], shape);
  for (const input of inputs.slice(1)) {
    const more = await model.forward(input, shape);
    for (let i = 0; i < logits.length; i++) logits[i] += more[i];
  }
  if (inputs.length > 1) { for (let i = 0; i < logits.length; i++) logits[i] /= inputs.length; }
  return logits;
}
