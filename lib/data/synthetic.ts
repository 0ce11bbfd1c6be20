/**
 * The embedded default data set: shapes drawn in code, deterministic by seed, no files. Ten classes that differ
 * only in spatial structure (a disc against a square, a ring against a frame, horizontal against vertical
 * stripes), drawn at random positions, sizes and colours over a graded background with pixel noise and small
 * clutter, so a linear classifier on pixels does poorly while a small convolutional transformer learns it fast.
 */
import { deriveSeed } from "../gpu/random.ts";
import { channelStats, type Dataset, type Split } from "./dataset.ts";

/** The class names, in label order. */
export const SYNTHETIC_CLASSES = [
  "disc",
  "ring",
  "square",
  "frame",
  "triangle",
  "diamond",
  "plus",
  "cross",
  "horizontal stripes",
  "vertical stripes",
];

/** Options for `createSynthetic`. */
export interface SyntheticOptions {
  /** Seed of the whole set (default 0); the same seed always gives the same bytes. */
  seed?: number;
  /** Training images (default 12,000 — 1,200 per class). */
  trainSize?: number;
  /** Test images (default 2,000). */
  testSize?: number;
  /** Side of the square images in pixels, at least 16 (default 32). */
  size?: number;
  /** 1 (gray) or 3 (RGB, colours random per image and unrelated to the class); default 3. */
  channels?: number;
}

/** Site numbers that keep the two splits' random streams apart. */
const TRAIN_SITE = 1, TEST_SITE = 2;

/** A fast seeded stream of u32 words (mulberry32) for one image; the image's seed comes from the counter hash. */
function stream(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Signed distance (pixels, negative inside) of an axis-aligned box of half-size `h` centred at the origin. */
function boxDistance(x: number, y: number, h: number): number {
  const dx = Math.abs(x) - h, dy = Math.abs(y) - h;
  const ox = Math.max(dx, 0), oy = Math.max(dy, 0);
  return Math.sqrt(ox * ox + oy * oy) + Math.min(Math.max(dx, dy), 0);
}

/** Signed distance of a bar (a segment from −`h` to `h` along unit direction (ux, uy)) of half-thickness `t`. */
function barDistance(x: number, y: number, ux: number, uy: number, h: number, t: number): number {
  const along = Math.min(Math.max(x * ux + y * uy, -h), h);
  const px = x - along * ux, py = y - along * uy;
  return Math.sqrt(px * px + py * py) - t;
}

/** Signed distance of an isosceles triangle pointing up (−y): apex (0, −h), base corners (±h, h). */
function triangleDistance(x: number, y: number, h: number): number {
  // The max of the half-planes' signed distances: exact along the edges, which is all a 1 px soft edge needs.
  const slanted = (2 * Math.abs(x) - y - h) / Math.sqrt(5);
  return Math.max(slanted, y - h);
}

/** Coverage in [0, 1] of a signed distance, with a one-pixel soft edge (cheap antialiasing). */
function coverage(d: number): number {
  return d <= -0.5 ? 1 : d >= 0.5 ? 0 : 0.5 - d;
}

/**
 * Renders one image of class `label` into `out` (CHW, `channels`×`size`×`size`), fully determined by
 * `imageSeed`.
 */
export function renderSyntheticImage(
  out: Uint8Array,
  label: number,
  imageSeed: number,
  size = 32,
  channels = 3,
): void {
  const next32 = stream(imageSeed);
  const rand = () => next32() / 4294967296;
  const between = (lo: number, hi: number) => lo + (hi - lo) * rand();
  const plane = size * size;

  // Colours: a background, a brighter foreground (contrast at least 0.25 on every channel) and a gradient.
  const bg: number[] = [], fg: number[] = [];
  const gray = channels === 1;
  const bgBase = between(0, 0.4), fgDelta = between(0.3, 0.55);
  for (let c = 0; c < channels; c++) {
    bg.push(gray ? bgBase : between(0, 0.4));
    fg.push(bg[c] + (gray ? fgDelta : between(0.25, 0.55)));
  }
  const gradAngle = between(0, 2 * Math.PI), gradAmount = between(0, 0.15) / size;
  const gx = Math.cos(gradAngle) * gradAmount, gy = Math.sin(gradAngle) * gradAmount;
  const noise = between(0.02, 0.07);

  // The shape: centre, radius (half-size) and stroke half-thickness, in pixels.
  const r = between(0.16, 0.33) * size;
  const cx = between(r + 1, size - r - 1), cy = between(r + 1, size - r - 1);
  const t = between(0.8, 1.5) * (size / 32);
  const direction = Math.floor(rand() * 4); // triangles point up, right, down or left
  const period = between(3.5, 5.5) * (size / 32), phase = rand() * period;

  const shape = (x: number, y: number): number => {
    switch (label) {
      case 0: // disc
        return coverage(Math.sqrt(x * x + y * y) - r);
      case 1: // ring
        return coverage(Math.abs(Math.sqrt(x * x + y * y) - 0.8 * r) - t);
      case 2: // square, with the area of a disc of radius r
        return coverage(boxDistance(x, y, 0.886 * r));
      case 3: // frame
        return coverage(Math.abs(boxDistance(x, y, 0.8 * r)) - t);
      case 4: { // triangle
        const [u, v] = direction === 0
          ? [x, y]
          : direction === 1
          ? [y, -x]
          : direction === 2
          ? [x, -y]
          : [y, x];
        return coverage(triangleDistance(u, v, 1.1 * r)); // about a disc's area
      }
      case 5: // diamond: a square turned 45°, same area
        return coverage(boxDistance((x + y) * Math.SQRT1_2, (x - y) * Math.SQRT1_2, 0.886 * r));
      case 6: // plus
        return coverage(Math.min(barDistance(x, y, 1, 0, r, t), barDistance(x, y, 0, 1, r, t)));
      case 7: // diagonal cross
        return coverage(
          Math.min(
            barDistance(x, y, Math.SQRT1_2, Math.SQRT1_2, r, t),
            barDistance(x, y, Math.SQRT1_2, -Math.SQRT1_2, r, t),
          ),
        );
      case 8:
      case 9: { // stripes in a square window
        const window = coverage(boxDistance(x, y, 0.886 * r));
        if (window === 0) return 0;
        const s = label === 8 ? y : x;
        const wave = Math.cos((2 * Math.PI * (s + phase)) / period);
        return window * Math.min(Math.max(wave * 1.5 + 0.5, 0), 1);
      }
      default:
        throw new RangeError(`renderSyntheticImage: label ${label} is not below ${SYNTHETIC_CLASSES.length}`);
    }
  };

  // Clutter: two to four dots or short strokes, each in its own colour, anywhere in the image.
  const clutter: { x: number; y: number; ux: number; uy: number; h: number; t: number; tone: number }[] = [];
  const clutterCount = 2 + Math.floor(rand() * 3);
  for (let k = 0; k < clutterCount; k++) {
    const angle = between(0, Math.PI);
    const stroke = rand() < 0.5;
    clutter.push({
      x: between(0, size),
      y: between(0, size),
      ux: Math.cos(angle),
      uy: Math.sin(angle),
      h: stroke ? between(1.5, 3) * (size / 32) : 0,
      t: between(0.6, 1.3) * (size / 32),
      tone: between(0.4, 1),
    });
  }

  // Shape and clutter coverage are computed only inside their bounding boxes.
  const shapeCover = new Float32Array(plane), clutterCover = new Float32Array(plane);
  const clutterTone = new Float32Array(plane);
  const reach = 1.1 * r + 2;
  const x0 = Math.max(0, Math.floor(cx - reach)), x1 = Math.min(size, Math.ceil(cx + reach));
  const y0 = Math.max(0, Math.floor(cy - reach)), y1 = Math.min(size, Math.ceil(cy + reach));
  for (let py = y0; py < y1; py++) {
    for (let px = x0; px < x1; px++) shapeCover[py * size + px] = shape(px + 0.5 - cx, py + 0.5 - cy);
  }
  for (const c of clutter) {
    const extent = c.h + c.t + 1;
    const cx0 = Math.max(0, Math.floor(c.x - extent)), cx1 = Math.min(size, Math.ceil(c.x + extent));
    const cy0 = Math.max(0, Math.floor(c.y - extent)), cy1 = Math.min(size, Math.ceil(c.y + extent));
    for (let py = cy0; py < cy1; py++) {
      for (let px = cx0; px < cx1; px++) {
        const cov = coverage(barDistance(px + 0.5 - c.x, py + 0.5 - c.y, c.ux, c.uy, c.h, c.t));
        const p = py * size + px;
        if (cov > clutterCover[p]) {
          clutterCover[p] = cov;
          clutterTone[p] = c.tone;
        }
      }
    }
  }

  const noiseScale = (noise * 2) / 65536;
  // A clamped view rounds and saturates on store, which is the conversion wanted.
  const pixels = new Uint8ClampedArray(out.buffer, out.byteOffset, out.length);
  // Noise words come from an inline xorshift32 seeded from the image's stream: the hot loop's cheapest RNG.
  let state = next32() | 1;
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      const p = py * size + px;
      const a = shapeCover[p], b = clutterCover[p] * (1 - a), tone = clutterTone[p];
      const shade = (px + 0.5 - size / 2) * gx + (py + 0.5 - size / 2) * gy;
      for (let c = 0; c < channels; c++) {
        const base = bg[c] + shade, contrast = fg[c] - bg[c];
        const v = base + contrast * (a + (tone - a) * b);
        // Triangular noise from the two 16-bit halves of one random word: bounded, zero mean, cheap.
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        const n = ((state & 0xffff) + ((state >>> 16) & 0xffff) - 65535) * noiseScale;
        pixels[c * plane + p] = (v + n) * 255;
      }
    }
  }
}

function renderSplit(seed: number, site: number, length: number, size: number, channels: number): Split {
  const imageSize = channels * size * size;
  const images = new Uint8Array(length * imageSize);
  const labels = new Int32Array(length);
  const classCount = SYNTHETIC_CLASSES.length;
  for (let i = 0; i < length; i++) {
    // Labels cycle through the classes, so every split is balanced to within one image per class.
    labels[i] = i % classCount;
    renderSyntheticImage(
      images.subarray(i * imageSize, (i + 1) * imageSize),
      labels[i],
      deriveSeed(seed, site, i),
      size,
      channels,
    );
  }
  return { length, images, labels };
}

/**
 * Generates the synthetic shapes data set (about half a second for the default 14,000 images).
 *
 * Classes are {@link SYNTHETIC_CLASSES}; `mean` and `std` are measured on the training split.
 *
 * @param options Seed, split sizes, image size and channels; every field has a default.
 * @returns A {@link Dataset} named `"synthetic-shapes"`.
 * @throws {RangeError} If `channels` is not 1 or 3, `size` is below 16, or a split size is not a count.
 *
 * @example
 * ```ts
 * import { createSynthetic } from "@compact-transformers/cct";
 *
 * const data = createSynthetic({ trainSize: 100, testSize: 20, seed: 3 });
 * console.log(data.classes[data.train.labels[0]], data.train.images.length); // "disc" 307200
 * ```
 */
export function createSynthetic(options: SyntheticOptions = {}): Dataset {
  const { seed = 0, trainSize = 12_000, testSize = 2_000, size = 32, channels = 3 } = options;
  if (channels !== 1 && channels !== 3) {
    throw new RangeError(`createSynthetic: channels must be 1 or 3, got ${channels}`);
  }
  if (!Number.isInteger(size) || size < 16) {
    throw new RangeError(`createSynthetic: size must be an integer ≥ 16, got ${size}`);
  }
  for (const [what, n] of [["trainSize", trainSize], ["testSize", testSize]] as const) {
    if (!Number.isInteger(n) || n < 0) {
      throw new RangeError(`createSynthetic: ${what} must be a count, got ${n}`);
    }
  }
  const train = renderSplit(seed, TRAIN_SITE, trainSize, size, channels);
  const test = renderSplit(seed, TEST_SITE, testSize, size, channels);
  const { mean, std } = channelStats(train, channels);
  return {
    name: "synthetic-shapes",
    channels,
    height: size,
    width: size,
    classes: [...SYNTHETIC_CLASSES],
    mean: mean.map((m) => Math.round(m * 1e4) / 1e4),
    std: std.map((s) => Math.max(Math.round(s * 1e4) / 1e4, 1e-3)),
    train,
    test,
  };
}
