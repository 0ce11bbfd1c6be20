/**
 * CPU float64 reference of the augmentation kernels. Every random choice is the same draw as on the GPU
 * (`lib/gpu/random.ts`, counters as documented in `shaders/augment.ts`), so kernel and reference produce the same
 * crops, flips and erasing boxes, and the outputs compare elementwise.
 */
import { pcgHash, randomU32, randomUniform } from "../../lib/gpu/random.ts";
import type { AugmentOptions, MixBatchOptions, MixSample } from "../../lib/kernels/augment.ts";
import { isRandom, resolveAugment } from "../../lib/kernels/augment.ts";
import {
  AUGMENT_DRAWS_PER_SAMPLE,
  AUGMENT_PARAM_WORDS,
  NOISE_SALT,
  RAND_AUGMENT_LAYERS,
  RAND_AUGMENT_SKIP,
} from "../../shaders/augment.ts";

const f32Bits = new Float32Array(1), u32Bits = new Uint32Array(f32Bits.buffer);
/** The bits of `v` rounded to float32. */
export function floatBits(v: number): number {
  f32Bits[0] = v;
  return u32Bits[0];
}
/** The float32 whose bits are `u`. */
export function bitsFloat(u: number): number {
  u32Bits[0] = u;
  return f32Bits[0];
}

/** Python's round(): halves to even (as WGSL `round`). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - Math.trunc(v)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Per-sample parameters, u32 [batch, 10] (layout in `shaders/augment.ts`). */
export function sampleParams(o: AugmentOptions, seed: number): Uint32Array {
  const r = resolveAugment("reference", o);
  const f = Math.fround;
  const { batch, height: H, width: W } = o;
  const out = new Uint32Array(batch * AUGMENT_PARAM_WORDS);
  const noiseSeed = pcgHash((seed ^ NOISE_SALT) >>> 0);
  for (let b = 0; b < batch; b++) {
    const draw = (k: number) => randomUniform(seed, b * AUGMENT_DRAWS_PER_SAMPLE + k);
    const drawInt = (k: number, n: number) => randomU32(seed, b * AUGMENT_DRAWS_PER_SAMPLE + k) % n;
    // p: crop top, left, height, width, flip, erase top, left, height, width, noise seed, RandAugment op and
    // argument bits per layer
    const p = [0, 0, H, W, 0, 0, 0, 0, 0, noiseSeed, RAND_AUGMENT_SKIP, 0, RAND_AUGMENT_SKIP, 0];
    if (r.spec.crop === "pad") {
      p[0] = drawInt(0, 2 * r.pad + 1);
      p[1] = drawInt(1, 2 * r.pad + 1);
    } else if (r.spec.crop === "resized") {
      const area = H * W;
      const lr0 = Math.log(f(r.ratioMin)), lr1 = Math.log(f(r.ratioMax));
      const s0 = f(r.scaleMin), s1 = f(r.scaleMax);
      let found = false;
      for (let a = 0; a < 10 && !found; a++) {
        const target = area * (s0 + (s1 - s0) * draw(4 * a));
        const aspect = Math.exp(lr0 + (lr1 - lr0) * draw(4 * a + 1));
        const w = roundHalfEven(Math.sqrt(target * aspect)), h = roundHalfEven(Math.sqrt(target / aspect));
        if (w > 0 && w <= W && h > 0 && h <= H) {
          p[0] = drawInt(4 * a + 2, H - h + 1);
          p[1] = drawInt(4 * a + 3, W - w + 1);
          p[2] = h;
          p[3] = w;
          found = true;
        }
      }
      if (!found) {
        const inRatio = W / H;
        let h = H, w = W;
        if (inRatio < f(r.ratioMin)) h = roundHalfEven(W / f(r.ratioMin));
        else if (inRatio > f(r.ratioMax)) w = roundHalfEven(H * f(r.ratioMax));
        p[0] = Math.floor((H - h) / 2);
        p[1] = Math.floor((W - w) / 2);
        p[2] = h;
        p[3] = w;
      }
    }
    if (r.spec.flip) p[4] = draw(40) < 0.5 ? 1 : 0;
    if (r.spec.erase && draw(41) < f(r.reprob)) {
      const area = H * W;
      const la0 = Math.log(f(r.eraseAspectMin)), la1 = -la0;
      const a0 = f(r.eraseAreaMin), a1 = f(r.eraseAreaMax);
      for (let a = 0; a < 10; a++) {
        const target = (a0 + (a1 - a0) * draw(42 + 4 * a)) * area;
        const aspect = Math.exp(la0 + (la1 - la0) * draw(43 + 4 * a));
        const h = roundHalfEven(Math.sqrt(target * aspect)), w = roundHalfEven(Math.sqrt(target / aspect));
        if (w < W && h < H) {
          p[5] = drawInt(44 + 4 * a, H - h + 1);
          p[6] = drawInt(45 + 4 * a, W - w + 1);
          p[7] = h;
          p[8] = w;
          break;
        }
      }
    }
    if (r.raMask !== 0) {
      const allowed = [...Array(32).keys()].filter((i) => (r.raMask >>> i) & 1);
      for (let l = 0; l < RAND_AUGMENT_LAYERS; l++) {
        const k = 82 + 8 * l;
        const op = allowed[drawInt(k, allowed.length)];
        if (!(draw(k + 1) < f(r.raProb))) continue;
        const z = Math.sqrt(-2 * Math.log(1 - draw(k + 2))) * Math.cos(2 * Math.PI * draw(k + 3) - Math.PI);
        const m = Math.min(Math.max(f(r.raMagnitude) + f(r.raStd) * z, 0), 10) / 10;
        const sign = draw(k + 4) < 0.5 ? -1 : 1;
        const arg = op === 3
          ? sign * m * 30
          : op === 4
          ? 4 - Math.floor(m * 4)
          : op === 5
          ? 256 - Math.floor(m * 256)
          : op === 6
          ? Math.floor(m * 110)
          : op >= 7 && op <= 10
          ? 1 + sign * m * 0.9
          : op === 11 || op === 12
          ? sign * m * 0.3
          : op === 13
          ? sign * m * 0.45 * W
          : op === 14
          ? sign * m * 0.45 * H
          : 0;
        p[10 + 2 * l] = op;
        p[11 + 2 * l] = floatBits(arg);
      }
    }
    out.set(p, b * AUGMENT_PARAM_WORDS);
  }
  return out;
}

/** The erasing noise of output element i: Box–Muller of draws 2i, 2i + 1 under the noise seed. */
export function erasingNoise(noiseSeed: number, i: number): number {
  const u1 = randomUniform(noiseSeed, 2 * i), u2 = randomUniform(noiseSeed, 2 * i + 1);
  return Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2 - Math.PI);
}

/**
 * out [B, C, H, W] = erase?(normalise(randAugment?(crop(flip(pixels))) / 255)) from uint8 pixels [B, C, H, W].
 * The per-sample parameters are the reference's own (from `seed`) unless `params` (e.g. the GPU's) is given.
 */
export function augmentImages(
  pixels: Uint8Array,
  o: AugmentOptions,
  seed = 0,
  params?: Uint32Array,
): Float64Array {
  const r = resolveAugment("reference", o);
  const { batch: B, channels: C, height: H, width: W } = o;
  params ??= isRandom(r.spec) ? sampleParams(o, seed) : undefined;
  const paramsOf = (b: number) =>
    params ? params.subarray(b * AUGMENT_PARAM_WORDS) : [0, 0, H, W, 0, 0, 0, 0, 0, 0, 255, 0, 255, 0];
  // Crop and flip: 0..255 values (bilinear ones rounded when RandAugment needs a uint8 image).
  let staged = new Float64Array(B * C * H * W);
  for (let b = 0; b < B; b++) {
    const p = paramsOf(b);
    for (let c = 0; c < C; c++) {
      const plane = (b * C + c) * H * W;
      const px = (y: number, x: number) => pixels[plane + y * W + x];
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const xs = p[4] ? W - 1 - x : x;
          let v: number;
          if (r.spec.crop === "pad") {
            const sy = y + p[0] - r.pad, sx = xs + p[1] - r.pad;
            v = sy >= 0 && sy < H && sx >= 0 && sx < W ? px(sy, sx) : 0;
          } else if (r.spec.crop === "resized") {
            // torch bilinear, align_corners=False: src = (dst + 0.5)·in/out − 0.5, clamped at 0.
            const ch = p[2], cw = p[3];
            const fy = Math.max((y + 0.5) * (ch / H) - 0.5, 0), fx = Math.max((xs + 0.5) * (cw / W) - 0.5, 0);
            const y0 = Math.min(Math.floor(fy), ch - 1), x0 = Math.min(Math.floor(fx), cw - 1);
            const ly = fy - y0, lx = fx - x0;
            const y1 = Math.min(y0 + 1, ch - 1), x1 = Math.min(x0 + 1, cw - 1);
            const at = (yy: number, xx: number) => px(p[0] + yy, p[1] + xx);
            v = (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) +
              ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
          } else {
            v = px(y, xs);
          }
          staged[plane + y * W + x] = r.spec.randAugment ? Math.floor(v + 0.5) : v;
        }
      }
    }
  }
  if (r.spec.randAugment) {
    for (let l = 0; l < RAND_AUGMENT_LAYERS; l++) {
      const next = new Float64Array(staged.length);
      for (let b = 0; b < B; b++) {
        const p = paramsOf(b);
        const image = staged.subarray(b * C * H * W, (b + 1) * C * H * W);
        next.set(
          randAugmentOp(image, p[10 + 2 * l], bitsFloat(p[11 + 2 * l]), C, H, W, o.mean),
          b * C * H * W,
        );
      }
      staged = next;
    }
  }
  const out = new Float64Array(B * C * H * W);
  for (let b = 0; b < B; b++) {
    const p = paramsOf(b);
    for (let c = 0; c < C; c++) {
      const plane = (b * C + c) * H * W;
      const mean = Math.fround(o.mean[c]), std = Math.fround(o.std[c]);
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const i = plane + y * W + x;
          let value = (staged[i] / 255 - mean) / std;
          if (y >= p[5] && y < p[5] + p[7] && x >= p[6] && x < p[6] + p[8]) value = erasingNoise(p[9], i);
          out[i] = value;
        }
      }
    }
  }
  return out;
}

/** PIL's Image.blend as ImageEnhance uses it: degenerate + factor·(v − degenerate) in float32, truncated. */
function blend(degenerate: number, v: number, factor: number): number {
  const t = Math.fround(degenerate + Math.fround(factor * (v - degenerate)));
  return Math.min(Math.max(Math.floor(t), 0), 255);
}

/** PIL's greyscale: (299 R + 587 G + 114 B)/1000 in 16-bit fixed point. */
function grey(r: number, g: number, b: number): number {
  return Math.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536);
}

/** The lookup table of a point op on one channel (`plane`), or null for other ops. */
function pointLut(
  op: number,
  arg: number,
  plane: Float64Array,
  image: Float64Array,
  C: number,
): number[] | null {
  const identity = [...Array(256).keys()];
  const hw = plane.length;
  switch (op) {
    case 0: { // AutoContrast
      let lo = 255, hi = 0;
      for (const v of plane) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
      if (hi <= lo) return identity;
      return identity.map((v) => v <= lo ? 0 : v >= hi ? 255 : Math.floor(((v - lo) * 255) / (hi - lo)));
    }
    case 1: { // Equalize (PIL ImageOps.equalize)
      const h = new Array(256).fill(0);
      for (const v of plane) h[v]++;
      const histo = h.filter((n) => n);
      if (histo.length <= 1) return identity;
      const step = Math.floor((hw - histo[histo.length - 1]) / 255);
      if (!step) return identity;
      let n = Math.floor(step / 2);
      return identity.map((i) => {
        const o = Math.min(Math.floor(n / step), 255);
        n += h[i];
        return o;
      });
    }
    case 2:
      return identity.map((v) => 255 - v);
    case 4: {
      const bits = arg;
      const mask = bits >= 8 ? 255 : (0xff << (8 - bits)) & 255;
      return identity.map((v) => v & mask);
    }
    case 5:
      return identity.map((v) => v < arg ? v : 255 - v);
    case 6:
      return identity.map((v) => v < 128 ? Math.min(v + arg, 255) : v);
    case 8: { // Contrast: blend with the rounded mean grey level
      let total = 0;
      for (let j = 0; j < hw; j++) {
        total += C === 3 ? grey(image[j], image[hw + j], image[2 * hw + j]) : image[j];
      }
      const mean = Math.floor((2 * total + hw) / (2 * hw));
      return identity.map((v) => blend(mean, v, arg));
    }
    case 9:
      return identity.map((v) => blend(0, v, arg));
    default:
      return null;
  }
}

/**
 * One RandAugment op (index into RAND_AUGMENT_OPS, 255 skipped) with its argument on one image [C, H, W] of
 * 0..255 integers (PIL semantics; affine ops bilinear with fill round(255·mean)).
 */
export function randAugmentOp(
  image: Float64Array,
  op: number,
  arg: number,
  C: number,
  H: number,
  W: number,
  mean: readonly number[],
): Float64Array {
  const hw = H * W;
  const out = image.slice();
  if (op === RAND_AUGMENT_SKIP) return out;
  const luts = [...Array(C).keys()].map((c) =>
    pointLut(op, arg, image.subarray(c * hw, (c + 1) * hw), image, C)
  );
  if (luts[0]) {
    for (let c = 0; c < C; c++) for (let j = 0; j < hw; j++) out[c * hw + j] = luts[c]![image[c * hw + j]];
    return out;
  }
  if (op === 7) { // Color: blend with greyscale
    if (C !== 3) return out;
    for (let j = 0; j < hw; j++) {
      const g = grey(image[j], image[hw + j], image[2 * hw + j]);
      for (let c = 0; c < 3; c++) out[c * hw + j] = blend(g, image[c * hw + j], arg);
    }
    return out;
  }
  if (op === 10) { // Sharpness: blend with SMOOTH ([1 1 1; 1 5 1; 1 1 1]/13), borders unfiltered
    for (let c = 0; c < C; c++) {
      const at = (y: number, x: number) => image[c * hw + y * W + x];
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const v = at(y, x);
          let smooth = v;
          if (x > 0 && y > 0 && x < W - 1 && y < H - 1) {
            let sum = 4 * v;
            for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) sum += at(y + dy, x + dx);
            smooth = Math.floor((2 * sum + 13) / 26);
          }
          out[c * hw + y * W + x] = blend(smooth, v, arg);
        }
      }
    }
    return out;
  }
  // Affine ops: input position of output pixel centre (X, Y) = (x + 0.5, y + 0.5).
  let map: (X: number, Y: number) => [number, number];
  if (op === 3) {
    const angle = (-arg * Math.PI) / 180, cs = Math.cos(angle), sn = Math.sin(angle);
    const cx = W / 2, cy = H / 2;
    map = (X, Y) => [cs * (X - cx) + sn * (Y - cy) + cx, -sn * (X - cx) + cs * (Y - cy) + cy];
  } else if (op === 11) map = (X, Y) => [X + arg * Y, Y];
  else if (op === 12) map = (X, Y) => [X, arg * X + Y];
  else if (op === 13) map = (X, Y) => [X + arg, Y];
  else if (op === 14) map = (X, Y) => [X, Y + arg];
  else throw new RangeError(`randAugmentOp: unknown op ${op}`);
  for (let c = 0; c < C; c++) {
    const fill = Math.min(roundHalfEven(255 * Math.fround(mean[c])), 255);
    const at = (y: number, x: number) => image[c * hw + y * W + x];
    const clampX = (x: number) => Math.min(Math.max(x, 0), W - 1);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const [xin, yin] = map(x + 0.5, y + 0.5);
        let v = fill;
        if (xin >= 0 && xin < W && yin >= 0 && yin < H) {
          const xi = xin - 0.5, yi = yin - 0.5;
          const x0 = Math.floor(xi), y0 = Math.floor(yi), dx = xi - x0, dy = yi - y0;
          const xa = clampX(x0), xb = clampX(x0 + 1), ya = Math.min(Math.max(y0, 0), H - 1);
          const v1 = at(ya, xa) + (at(ya, xb) - at(ya, xa)) * dx;
          const v2 = y0 + 1 >= 0 && y0 + 1 < H ? at(y0 + 1, xa) + (at(y0 + 1, xb) - at(y0 + 1, xa)) * dx : v1;
          v = Math.floor(v1 + (v2 - v1) * dy); // PIL truncates
        }
        out[c * hw + y * W + x] = v;
      }
    }
  }
  return out;
}

/**
 * timm Mixup of a batch: images [B, C, H, W] and labels [B] → mixed images and soft targets [B, K]
 * (λ rounded to float32 as the kernels receive it).
 */
export function mixBatch(
  images: Float64Array,
  labels: Int32Array,
  sample: MixSample,
  o: MixBatchOptions,
): { images: Float64Array; targets: Float64Array } {
  const { batch: B, channels: C, height: H, width: W, classes: K } = o;
  const eps = o.smoothing ?? 0;
  const lam = Math.fround(sample.lambda);
  const per = C * H * W;
  const out = images.slice();
  for (let b = 0; b < B; b++) {
    const f = B - 1 - b; // the partner in the flipped batch
    for (let c = 0; c < C; c++) {
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const r = (c * H + y) * W + x;
          if (sample.mode === "mixup") {
            out[b * per + r] = lam * images[b * per + r] + (1 - lam) * images[f * per + r];
          } else if (sample.mode === "cutmix") {
            const { y0, y1, x0, x1 } = sample.box;
            if (y >= y0 && y < y1 && x >= x0 && x < x1) out[b * per + r] = images[f * per + r];
          }
        }
      }
    }
  }
  const off = Math.fround(eps / K), on = Math.fround(1 - eps + eps / K);
  const l = sample.mode === "none" ? 1 : lam;
  const targets = new Float64Array(B * K);
  for (let b = 0; b < B; b++) {
    for (let k = 0; k < K; k++) {
      const own = labels[b] === k ? on : off, other = labels[B - 1 - b] === k ? on : off;
      targets[b * K + k] = l * own + (1 - l) * other;
    }
  }
  return { images: out, targets };
}
