/**
 * Data augmentation for training (SPEC §4) on the GPU: crop (zero-padded random crop or random resized crop),
 * horizontal flip, normalisation and random erasing of uint8 images; mixup / cutmix of a batch with soft targets.
 *
 * Pixels arrive as raw bytes: image element p (flat index into [B, C, H, W]) is byte p & 3 (little-endian) of
 * u32 word p >> 2, so a batch of B·C·H·W bytes is uploaded unchanged as ⌈B·C·H·W/4⌉ words.
 *
 * Randomness: per sample b, draw k (k < {@link AUGMENT_DRAWS_PER_SAMPLE}) is `random_*(seed, b·128 + k)` with the
 * kernel seed of `shaders/dropout.ts` (a constant, or a word of a host-rewritten block). Draw numbers:
 * - random resized crop: attempt a ∈ 0..9 uses k = 4a (scale), 4a + 1 (log-ratio), 4a + 2 (top), 4a + 3 (left);
 * - padded random crop: k = 0 (top offset), 1 (left offset), each uniform in [0, 2·pad];
 * - flip: k = 40 (flip when u < 0.5);
 * - random erasing: k = 41 (erase when u < reprob), attempt a ∈ 0..9 uses k = 42 + 4a (area), 43 + 4a
 *   (log-aspect), 44 + 4a (top), 45 + 4a (left);
 * - the erasing noise of output element i is Box–Muller of draws 2i and 2i + 1 under the noise seed
 *   pcg_hash(seed ^ {@link NOISE_SALT});
 * - RandAugment: layer l uses k = 82 + 8l .. 86 + 8l (see `RAND_AUGMENT_DRAWS`).
 * Integers in [0, n) are `random_u32 % n` (exact on host and GPU); floats are `random_uniform` (24 bits).
 *
 * The work is split in two: one invocation per sample draws its parameters (the crop box may take 10 attempts)
 * into a small u32 tensor [B, {@link AUGMENT_PARAM_WORDS}]; then one invocation per image row reads them (integer
 * division is scalar on llvmpipe: per-row index arithmetic was 3–5× faster than per element). The per-element
 * kernel and a "naive" one that recomputes the parameters in every element are kept for the benchmark.
 *
 * Per-sample parameter words: 0 crop top, 1 crop left (for the padded crop: the offset in [0, 2·pad] into the
 * padded image), 2 crop height, 3 crop width, 4 flip (0/1), 5 erase top, 6 erase left, 7 erase height, 8 erase
 * width (0: no erasing), 9 the noise seed, 10 + 2l and 11 + 2l RandAugment layer l's op (255: none) and its
 * argument (f32 bits).
 *
 * With RandAugment the pixel pass is staged: crop and flip into a float scratch of 0..255 integers, per layer a
 * lookup-table pass (point ops, one invocation per image channel) and three apply passes (pixelwise ops,
 * Sharpness, affine ops; one invocation per image row) between two scratches, then normalisation and erasing.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";
import { RANDOM_WGSL } from "./random.ts";
import { type SeedLayout, seedWgsl } from "./dropout.ts";

/** Invocations per workgroup of the per-element and per-row kernels. */
export const AUGMENT_WORKGROUP = 256;
/** Invocations per workgroup of the per-sample parameter and lookup-table kernels. */
export const AUGMENT_SAMPLE_WORKGROUP = 64;
/** u32 words of per-sample parameters. */
export const AUGMENT_PARAM_WORDS = 14;
/** Counters reserved per sample: draw k of sample b uses counter b·128 + k. */
export const AUGMENT_DRAWS_PER_SAMPLE = 128;
/** Mixed into the seed to give the erasing noise its own stream. */
export const NOISE_SALT = 0x5bd1e995;
/** u32 words of mix parameters in a block: mode, λ (f32 bits), box y0, y1, x0, x1. */
export const MIX_PARAM_WORDS = 6;

/** Which crop the kernel applies: none (identity), zero-padded random crop, or random resized crop. */
export type CropMode = "none" | "pad" | "resized";

/** What one specialised augmentation kernel does. */
export interface AugmentSpec {
  /** Channels per image (C). */
  channels: number;
  /** Which crop. */
  crop: CropMode;
  /** Random horizontal flip. */
  flip: boolean;
  /** Random erasing. */
  erase: boolean;
  /** RandAugment's per-sample choices are drawn (params words 10–13). */
  randAugment?: boolean;
}

/** RandAugment layers (timm `rand-m9-…`: n = 2). */
export const RAND_AUGMENT_LAYERS = 2;
/** The op index of a layer that was skipped (each layer applies with probability `prob`). */
export const RAND_AUGMENT_SKIP = 255;

/** WGSL array literal of parameters that change nothing (noise seed `noise`). */
function identityParams(noise: string): string {
  return `array<u32, ${AUGMENT_PARAM_WORDS}>(0u, 0u, hgt, wid, 0u, 0u, 0u, 0u, 0u, ${noise}, ` +
    `${RAND_AUGMENT_SKIP}u, 0u, ${RAND_AUGMENT_SKIP}u, 0u)`;
}

/**
 * The shared uniform struct. Fields: n (invocations' work items), batch, height, width, pad, seed (value or block
 * word), RandAugment's op mask and the layer a dispatch applies, resized-crop scale and aspect-ratio ranges, reprob,
 * erasing area range and minimum aspect, RandAugment magnitude, its std and the per-layer probability, a spare, then
 * per channel (mean, std, 0, 0).
 */
function sizesWgsl(channels: number): string {
  return /* wgsl */ `
struct Sizes {
  n: u32, batch: u32, height: u32, width: u32,
  pad: u32, seed: u32, ra_mask: u32, ra_layer: u32,
  scale_min: f32, scale_max: f32, ratio_min: f32, ratio_max: f32,
  reprob: f32, erase_area_min: f32, erase_area_max: f32, erase_aspect_min: f32,
  ra_magnitude: f32, ra_std: f32, ra_prob: f32, spare: f32,
  norm: array<vec4<f32>, ${channels}>,
}
@group(0) @binding(0) var<uniform> sizes: Sizes;
`;
}

/** WGSL `sample_params(b) -> array<u32, 10>`: the per-sample draws (needs `kernel_seed()`). */
function sampleParamsWgsl(spec: AugmentSpec): string {
  const crop = spec.crop === "pad"
    ? /* wgsl */ `
  let span = 2u * sizes.pad + 1u;
  p[0] = draw_int(b, 0u, span);
  p[1] = draw_int(b, 1u, span);`
    : spec.crop === "resized"
    ? /* wgsl */ `
  // torchvision RandomResizedCrop.get_params: 10 attempts, then a centre crop at the nearest allowed ratio.
  let area = f32(hgt * wid);
  let log_r0 = log(sizes.ratio_min);
  let log_r1 = log(sizes.ratio_max);
  var found = false;
  for (var a = 0u; a < 10u; a++) {
    let target_area = area * (sizes.scale_min + (sizes.scale_max - sizes.scale_min) * draw(b, 4u * a));
    let aspect = exp(log_r0 + (log_r1 - log_r0) * draw(b, 4u * a + 1u));
    let w = round(sqrt(target_area * aspect));
    let h = round(sqrt(target_area / aspect));
    if (w > 0.0 && w <= f32(wid) && h > 0.0 && h <= f32(hgt)) {
      let hh = u32(h);
      let ww = u32(w);
      p[0] = draw_int(b, 4u * a + 2u, hgt - hh + 1u);
      p[1] = draw_int(b, 4u * a + 3u, wid - ww + 1u);
      p[2] = hh;
      p[3] = ww;
      found = true;
      break;
    }
  }
  if (!found) {
    let in_ratio = f32(wid) / f32(hgt);
    var h = hgt;
    var w = wid;
    if (in_ratio < sizes.ratio_min) {
      h = u32(round(f32(wid) / sizes.ratio_min));
    } else if (in_ratio > sizes.ratio_max) {
      w = u32(round(f32(hgt) * sizes.ratio_max));
    }
    p[0] = (hgt - h) / 2u;
    p[1] = (wid - w) / 2u;
    p[2] = h;
    p[3] = w;
  }`
    : "";
  const flip = spec.flip ? "p[4] = select(0u, 1u, draw(b, 40u) < 0.5);" : "";
  const erase = spec.erase
    ? /* wgsl */ `
  // timm RandomErasing (max_count 1): 10 attempts at a box strictly smaller than the image.
  if (draw(b, 41u) < sizes.reprob) {
    let area = f32(hgt * wid);
    let log_a0 = log(sizes.erase_aspect_min);
    let log_a1 = -log_a0;
    for (var a = 0u; a < 10u; a++) {
      let area_frac = sizes.erase_area_min + (sizes.erase_area_max - sizes.erase_area_min) * draw(b, 42u + 4u * a);
      let target_area = area_frac * area;
      let aspect = exp(log_a0 + (log_a1 - log_a0) * draw(b, 43u + 4u * a));
      let h = round(sqrt(target_area * aspect));
      let w = round(sqrt(target_area / aspect));
      if (w < f32(wid) && h < f32(hgt)) {
        let hh = u32(h);
        let ww = u32(w);
        p[5] = draw_int(b, 44u + 4u * a, hgt - hh + 1u);
        p[6] = draw_int(b, 45u + 4u * a, wid - ww + 1u);
        p[7] = hh;
        p[8] = ww;
        break;
      }
    }
  }`
    : "";
  return /* wgsl */ `
${RANDOM_WGSL}
fn draw(b: u32, k: u32) -> f32 {
  return random_uniform(kernel_seed(), b * ${AUGMENT_DRAWS_PER_SAMPLE}u + k);
}
fn draw_int(b: u32, k: u32, n: u32) -> u32 {
  return random_u32(kernel_seed(), b * ${AUGMENT_DRAWS_PER_SAMPLE}u + k) % n;
}
fn sample_params(b: u32) -> array<u32, ${AUGMENT_PARAM_WORDS}> {
  let hgt = sizes.height;
  let wid = sizes.width;
  var p = ${identityParams(`pcg_hash(kernel_seed() ^ ${NOISE_SALT}u)`)};
  ${crop}
  ${flip}
  ${erase}
  ${spec.randAugment ? RAND_AUGMENT_DRAWS : ""}
  return p;
}
`;
}

/** timm's `_RAND_INCREASING_TRANSFORMS`, in order: a layer's op index is the position in this list. */
export const RAND_AUGMENT_OPS = [
  "AutoContrast",
  "Equalize",
  "Invert",
  "Rotate",
  "PosterizeIncreasing",
  "SolarizeIncreasing",
  "SolarizeAdd",
  "ColorIncreasing",
  "ContrastIncreasing",
  "BrightnessIncreasing",
  "SharpnessIncreasing",
  "ShearX",
  "ShearY",
  "TranslateXRel",
  "TranslateYRel",
] as const;

/**
 * RandAugment's draws inside `sample_params` (timm RandAugment + AugmentOp with `rand-m9-mstd0.5-inc1`): per
 * layer l, k = 82 + 8l picks an op uniformly among the mask's, k + 1 applies it with probability `ra_prob`, k + 2
 * and k + 3 give the magnitude N(m, std) (Box–Muller) clipped to [0, 10], k + 4 the sign of signed ops. Words
 * 10 + 2l and 11 + 2l receive the op (255: skipped) and its argument as f32 bits: degrees (Rotate), bits
 * (Posterize), threshold (Solarize), addend (SolarizeAdd), enhancement factor (Color, Contrast, Brightness,
 * Sharpness), shear, or translation in pixels — timm's level-to-argument functions.
 */
const RAND_AUGMENT_DRAWS = /* wgsl */ `
  let ra_count = countOneBits(sizes.ra_mask);
  for (var l = 0u; l < ${RAND_AUGMENT_LAYERS}u; l++) {
    let k = 82u + 8u * l;
    var chosen = draw_int(b, k, ra_count);
    var op = 0u;
    for (var bit = 0u; bit < 32u; bit++) {
      if ((sizes.ra_mask & (1u << bit)) != 0u) {
        if (chosen == 0u) {
          op = bit;
          break;
        }
        chosen -= 1u;
      }
    }
    if (draw(b, k + 1u) < sizes.ra_prob) {
      let z = sqrt(-2.0 * log(1.0 - draw(b, k + 2u))) * cos(6.2831853 * draw(b, k + 3u) - 3.14159265);
      let m = clamp(sizes.ra_magnitude + sizes.ra_std * z, 0.0, 10.0) / 10.0;
      let sign = select(1.0, -1.0, draw(b, k + 4u) < 0.5);
      var arg = 0.0;
      switch op {
        case 3u: { arg = sign * m * 30.0; }
        case 4u: { arg = 4.0 - floor(m * 4.0); }
        case 5u: { arg = 256.0 - floor(m * 256.0); }
        case 6u: { arg = floor(m * 110.0); }
        case 7u, 8u, 9u, 10u: { arg = 1.0 + sign * m * 0.9; }
        case 11u, 12u: { arg = sign * m * 0.3; }
        case 13u: { arg = sign * m * 0.45 * f32(wid); }
        case 14u: { arg = sign * m * 0.45 * f32(hgt); }
        default: {}
      }
      p[10u + 2u * l] = op;
      p[11u + 2u * l] = bitcast<u32>(arg);
    }
  }`;

/** PIL's Image.blend (ImageEnhance): degenerate + factor·(image − degenerate) in f32, truncated into 0..255. */
const BLEND_WGSL = /* wgsl */ `
fn blend(degenerate: f32, v: f32, factor: f32) -> f32 {
  return clamp(floor(degenerate + factor * (v - degenerate)), 0.0, 255.0);
}
fn grey(r: f32, g: f32, b: f32) -> f32 {
  // PIL's L = (299 R + 587 G + 114 B)/1000 in 16-bit fixed point, rounded.
  return f32((u32(r) * 19595u + u32(g) * 38470u + u32(b) * 7471u + 32768u) >> 16u);
}
fn layer_op(b: u32) -> u32 { return params[b * ${AUGMENT_PARAM_WORDS}u + 10u + 2u * sizes.ra_layer]; }
fn layer_arg(b: u32) -> f32 { return bitcast<f32>(params[b * ${AUGMENT_PARAM_WORDS}u + 11u + 2u * sizes.ra_layer]); }
fn is_point_op(op: u32) -> bool {
  return op <= 2u || (op >= 4u && op <= 6u) || op == 8u || op == 9u;
}
`;

/**
 * RandAugment layer `sizes.ra_layer`, part 1: the 256-entry lookup table of a point op (AutoContrast, Equalize,
 * Invert, Posterize, Solarize, SolarizeAdd, Contrast, Brightness) per (sample, channel), from the image's
 * histogram or range where the op needs one. One invocation per (b, c). Bindings: sizes (n = B·C), lut (u32
 * [B, C, 256]), src (f32 [B, C, H, W] holding 0..255 integers), params.
 */
export function randAugmentLutWgsl(channels: number): string {
  const wg = AUGMENT_SAMPLE_WORKGROUP;
  return /* wgsl */ `
${sizesWgsl(channels)}
@group(0) @binding(1) var<storage, read_write> lut: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;
${BLEND_WGSL}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= sizes.n) { return; }
  let b = i / ${channels}u;
  let op = layer_op(b);
  if (!is_point_op(op)) { return; }
  let arg = layer_arg(b);
  let hw = sizes.height * sizes.width;
  let plane = i * hw;
  let base = i * 256u;
  switch op {
    case 0u: {
      // AutoContrast (cutoff 0): stretch [lo, hi] to [0, 255] (integer arithmetic).
      var lo = 255u;
      var hi = 0u;
      for (var j = 0u; j < hw; j++) {
        let v = u32(src[plane + j]);
        lo = min(lo, v);
        hi = max(hi, v);
      }
      for (var v = 0u; v < 256u; v++) {
        var o = v;
        if (hi > lo) { o = select(select((v - lo) * 255u / (hi - lo), 255u, v >= hi), 0u, v <= lo); }
        lut[base + v] = o;
      }
    }
    case 1u: {
      // Equalize: PIL ImageOps.equalize.
      var hist: array<u32, 256>;
      for (var j = 0u; j < hw; j++) {
        let v = u32(src[plane + j]);
        hist[v] += 1u;
      }
      var used = 0u;
      var last = 0u;
      for (var v = 0u; v < 256u; v++) {
        if (hist[v] != 0u) {
          used += 1u;
          last = hist[v];
        }
      }
      let step = (hw - last) / 255u;
      var n = step / 2u;
      for (var v = 0u; v < 256u; v++) {
        if (used <= 1u || step == 0u) {
          lut[base + v] = v;
        } else {
          lut[base + v] = min(n / step, 255u);
          n += hist[v];
        }
      }
    }
    case 8u: {
      // Contrast: blend with the rounded mean of the greyscale image.
      var total = 0u;
      let image = b * ${channels}u * hw;
      for (var j = 0u; j < hw; j++) {
        ${
    channels === 3
      ? "total += u32(grey(src[image + j], src[image + hw + j], src[image + 2u * hw + j]));"
      : "total += u32(src[image + j]);"
  }
      }
      let mean = f32((2u * total + hw) / (2u * hw));
      for (var v = 0u; v < 256u; v++) { lut[base + v] = u32(blend(mean, f32(v), arg)); }
    }
    default: {
      for (var v = 0u; v < 256u; v++) {
        var o = v;
        switch op {
          case 2u: { o = 255u - v; }
          case 4u: {
            let bits = u32(arg);
            o = select(v & ((0xffu << (8u - bits)) & 255u), v, bits >= 8u);
          }
          case 5u: { o = select(255u - v, v, v < u32(arg)); }
          case 6u: { o = select(v, min(v + u32(arg), 255u), v < 128u); }
          case 9u: { o = u32(blend(0.0, f32(v), arg)); }
          default: {}
        }
        lut[base + v] = o;
      }
    }
  }
}
`;
}

/** Which ops a {@link randAugmentApplyWgsl} dispatch applies (the other rows return at once). */
export type RandAugmentPart = "pixelwise" | "sharpness" | "affine";

/** The parts of one RandAugment layer, in dispatch order; each row (sample) is written by exactly one. */
export const RAND_AUGMENT_PARTS: readonly RandAugmentPart[] = ["pixelwise", "sharpness", "affine"];

/**
 * RandAugment layer `sizes.ra_layer`, part 2: dst = op(src) per (sample, row), in three dispatches by `part`:
 * "pixelwise" — point ops through the lookup table, Color (blend with greyscale), a copy for a skipped layer;
 * "sharpness" — blend with PIL's SMOOTH 3×3 filter, borders kept; "affine" — Rotate / ShearX / ShearY /
 * TranslateX / TranslateY (PIL's affine transform with bilinear sampling at pixel centres, outside filled with
 * round(255·mean)). Outputs are 0..255 integers. Bindings: sizes (n = B·H rows), dst, src (f32 [B, C, H, W]),
 * params, and lut for "pixelwise" only.
 *
 * Why three dispatches: llvmpipe runs both sides of an `if` under a lane mask, so one kernel with every op cost
 * the sum of all the ops' branches (8–9 ms per layer at 128×3×32×32); an early `return` of a whole SIMD group is
 * skipped (a part with no rows to do: 0.3 ms). One invocation per pixel instead of per row measured the same.
 */
export function randAugmentApplyWgsl(channels: number, part: RandAugmentPart): string {
  const wg = AUGMENT_WORKGROUP;
  const C = channels;
  const copy = `for (var c = 0u; c < ${C}u; c++) { dst[image + c * hw + o] = src[image + c * hw + o]; }`;
  const body = {
    pixelwise: /* wgsl */ `
  if (!(is_point_op(op) || op == 7u || op == ${RAND_AUGMENT_SKIP}u)) { return; }
  for (var x = 0u; x < wid; x++) {
    let o = y * wid + x;
    if (is_point_op(op)) {
      for (var c = 0u; c < ${C}u; c++) {
        dst[image + c * hw + o] = f32(lut[(b * ${C}u + c) * 256u + u32(src[image + c * hw + o])]);
      }
    } else if (op == 7u) {
      ${
      C === 3
        ? `let g = grey(src[image + o], src[image + hw + o], src[image + 2u * hw + o]);
      for (var c = 0u; c < 3u; c++) { dst[image + c * hw + o] = blend(g, src[image + c * hw + o], arg); }`
        : copy
    }
    } else {
      ${copy}
    }
  }`,
    sharpness: /* wgsl */ `
  if (op != 10u) { return; }
  for (var x = 0u; x < wid; x++) {
    let o = y * wid + x;
    let border = x == 0u || y == 0u || x == wid - 1u || y == hgt - 1u;
    for (var c = 0u; c < ${C}u; c++) {
      let at = image + c * hw + o;
      let v = src[at];
      var smoothed = v;
      if (!border) {
        let s = src[at - wid - 1u] + src[at - wid] + src[at - wid + 1u] + src[at - 1u] + 5.0 * v + src[at + 1u] +
            src[at + wid - 1u] + src[at + wid] + src[at + wid + 1u];
        smoothed = f32((2u * u32(s) + 13u) / 26u);
      }
      dst[at] = blend(smoothed, v, arg);
    }
  }`,
    affine: /* wgsl */ `
  if (!(op == 3u || (op >= 11u && op <= 14u))) { return; }
  // The affine map from output pixel centres (X, Y) to input positions: columns of m times (X, Y, 1).
  var m = mat3x2<f32>(1.0, 0.0, 0.0, 1.0, 0.0, 0.0);
  switch op {
    case 3u: {
      let angle = -arg * 0.017453292519943295;
      let cs = cos(angle);
      let sn = sin(angle);
      let cx = 0.5 * f32(wid);
      let cy = 0.5 * f32(hgt);
      m = mat3x2<f32>(cs, -sn, sn, cs, cx - cs * cx - sn * cy, cy + sn * cx - cs * cy);
    }
    case 11u: { m[1].x = arg; }
    case 12u: { m[0].y = arg; }
    case 13u: { m[2].x = arg; }
    default: { m[2].y = arg; }
  }
  for (var x = 0u; x < wid; x++) {
    let o = y * wid + x;
    let pos = m * vec3<f32>(f32(x) + 0.5, f32(y) + 0.5, 1.0);
    for (var c = 0u; c < ${C}u; c++) {
      let fill = min(round(255.0 * sizes.norm[c].x), 255.0);
      dst[image + c * hw + o] = sample_bilinear(image + c * hw, pos.x, pos.y, fill);
    }
  }`,
  }[part];
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
${sizesWgsl(channels)}
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;
${part === "pixelwise" ? "@group(0) @binding(4) var<storage, read> lut: array<u32>;" : ""}
${BLEND_WGSL}
/** PIL's bilinear filter of an affine transform at input position (xin, yin), or the fill outside. */
fn sample_bilinear(plane: u32, xin: f32, yin: f32, fill: f32) -> f32 {
  let wid = sizes.width;
  let hgt = sizes.height;
  if (xin < 0.0 || xin >= f32(wid) || yin < 0.0 || yin >= f32(hgt)) { return fill; }
  let xi = xin - 0.5;
  let yi = yin - 0.5;
  let fx0 = floor(xi);
  let fy0 = floor(yi);
  let dx = xi - fx0;
  let dy = yi - fy0;
  let x0 = i32(fx0);
  let y0 = i32(fy0);
  let xa = u32(clamp(x0, 0, i32(wid) - 1));
  let xb = u32(clamp(x0 + 1, 0, i32(wid) - 1));
  let ra = plane + u32(clamp(y0, 0, i32(hgt) - 1)) * wid;
  let v1 = src[ra + xa] + (src[ra + xb] - src[ra + xa]) * dx;
  var v2 = v1;
  if (y0 + 1 >= 0 && y0 + 1 < i32(hgt)) {
    let rb = plane + u32(y0 + 1) * wid;
    v2 = src[rb + xa] + (src[rb + xb] - src[rb + xa]) * dx;
  }
  return floor(v1 + (v2 - v1) * dy); // PIL truncates
}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = linear_index(gid, nwg);
  if (r >= sizes.n) { return; }
  let wid = sizes.width;
  let hgt = sizes.height;
  let hw = hgt * wid;
  let b = r / hgt;
  let y = r - b * hgt;
  let image = b * ${C}u * hw;
  let op = layer_op(b);
  let arg = layer_arg(b);
  ${body}
}
`;
}

/**
 * Per-sample parameters: params[b, :] = sample_params(b). Bindings: sizes, params (u32 [B, 14]), seed block.
 */
export function augmentParamsWgsl(spec: AugmentSpec, seed: SeedLayout): string {
  const wg = AUGMENT_SAMPLE_WORKGROUP;
  return /* wgsl */ `
${sizesWgsl(spec.channels)}
@group(0) @binding(1) var<storage, read_write> params: array<u32>;
${seedWgsl(seed, 2)}
${sampleParamsWgsl(spec)}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let b = gid.x;
  if (b >= sizes.batch) { return; }
  let p = sample_params(b);
  for (var k = 0u; k < ${AUGMENT_PARAM_WORDS}u; k++) {
    params[b * ${AUGMENT_PARAM_WORDS}u + k] = p[k];
  }
}
`;
}

/** The source value (0..255, bilinear for the resized crop) of output element (plane, y, x) before flipping. */
function cropWgsl(crop: CropMode): string {
  switch (crop) {
    case "none":
      return "let v = f32(pixel(plane + y * wid + xs));";
    case "pad":
      return /* wgsl */ `
  // Zero padding: positions outside the image read 0 (torchvision's fill).
  let sy = i32(y + p[0]) - i32(sizes.pad);
  let sx = i32(xs + p[1]) - i32(sizes.pad);
  var v = 0.0;
  if (sy >= 0 && sy < i32(hgt) && sx >= 0 && sx < i32(wid)) {
    v = f32(pixel(plane + u32(sy) * wid + u32(sx)));
  }`;
    case "resized":
      return /* wgsl */ `
  // Bilinear resize of the crop back to height × width, half-pixel centres (torch align_corners=False).
  let fy = max((f32(y) + 0.5) * (f32(p[2]) / f32(hgt)) - 0.5, 0.0);
  let fx = max((f32(xs) + 0.5) * (f32(p[3]) / f32(wid)) - 0.5, 0.0);
  let y0 = min(u32(fy), p[2] - 1u);
  let x0 = min(u32(fx), p[3] - 1u);
  let ly = fy - f32(y0);
  let lx = fx - f32(x0);
  let y1 = min(y0 + 1u, p[2] - 1u);
  let x1 = min(x0 + 1u, p[3] - 1u);
  let row0 = plane + (p[0] + y0) * wid + p[1];
  let row1 = plane + (p[0] + y1) * wid + p[1];
  let v = (1.0 - ly) * ((1.0 - lx) * f32(pixel(row0 + x0)) + lx * f32(pixel(row0 + x1))) +
      ly * ((1.0 - lx) * f32(pixel(row1 + x0)) + lx * f32(pixel(row1 + x1)));`;
  }
}

/**
 * out[b, c, y, x] = erase?(normalise(crop(flip(u8 / 255)))). Bindings: sizes, out (f32 [B, C, H, W]), pixels
 * (u32 words of bytes), then params (u32 [B, 14]) — or, for the naive variant, the seed block (recomputing the
 * parameters per element). With every option off there are no params: a pure normalise.
 */
export function augmentPixelsWgsl(
  spec: AugmentSpec,
  source: { params: true } | { params: false; seed: SeedLayout | null },
): string {
  const wg = AUGMENT_WORKGROUP;
  const random = spec.crop !== "none" || spec.flip || spec.erase;
  let paramsDecl: string;
  let paramsOf: string;
  if (!random) {
    paramsDecl = "";
    paramsOf = `let p = ${identityParams("0u")};`;
  } else if (source.params) {
    paramsDecl = "@group(0) @binding(3) var<storage, read> params: array<u32>;";
    paramsOf = /* wgsl */ `
  var p: array<u32, ${AUGMENT_PARAM_WORDS}>;
  for (var k = 0u; k < ${AUGMENT_PARAM_WORDS}u; k++) { p[k] = params[b * ${AUGMENT_PARAM_WORDS}u + k]; }`;
  } else {
    paramsDecl = `${seedWgsl(source.seed!, 3)}\n${sampleParamsWgsl(spec)}`;
    paramsOf = "let p = sample_params(b);";
  }
  const erase = spec.erase
    ? /* wgsl */ `
  // Unsigned wrap-around makes y < top fail the range test too.
  if (y - p[5] < p[7] && x - p[6] < p[8]) {
    let u1 = random_uniform(p[9], 2u * i);
    let u2 = random_uniform(p[9], 2u * i + 1u);
    value = sqrt(-2.0 * log(1.0 - u1)) * cos(6.2831853 * u2 - 3.14159265);
  }`
    : "";
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
${sizesWgsl(spec.channels)}
${!random || source.params ? RANDOM_WGSL : ""}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> pixels: array<u32>;
${paramsDecl}
fn pixel(index: u32) -> u32 {
  return (pixels[index >> 2u] >> ((index & 3u) * 8u)) & 255u;
}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  let hgt = sizes.height;
  let wid = sizes.width;
  let hw = hgt * wid;
  let chw = ${spec.channels}u * hw;
  let b = i / chw;
  let c = (i - b * chw) / hw;
  let yx = i - b * chw - c * hw;
  let y = yx / wid;
  let x = yx - y * wid;
  ${paramsOf}
  let xs = select(x, wid - 1u - x, p[4] != 0u);
  let plane = (b * ${spec.channels}u + c) * hw;
  ${cropWgsl(spec.crop)}
  let norm = sizes.norm[c];
  var value = (v / 255.0 - norm.x) / norm.y;
  ${erase}
  out[i] = value;
}
`;
}

/** Row-constant part of the crop (hoisted out of the loop over x) of {@link augmentRowsWgsl}. */
function rowCropWgsl(crop: CropMode): { row: string; element: string } {
  switch (crop) {
    case "none":
      return { row: "let src = plane + y * wid;", element: "let v = f32(pixel(src + xs));" };
    case "pad":
      return {
        row: /* wgsl */ `
  let sy = i32(y + p[0]) - i32(sizes.pad);
  let row_inside = sy >= 0 && sy < i32(hgt);
  let src = plane + u32(max(sy, 0)) * wid;`,
        element: /* wgsl */ `
    let sx = i32(xs + p[1]) - i32(sizes.pad);
    var v = 0.0;
    if (row_inside && sx >= 0 && sx < i32(wid)) { v = f32(pixel(src + u32(sx))); }`,
      };
    case "resized":
      return {
        row: /* wgsl */ `
  let fy = max((f32(y) + 0.5) * (f32(p[2]) / f32(hgt)) - 0.5, 0.0);
  let y0 = min(u32(fy), p[2] - 1u);
  let ly = fy - f32(y0);
  let y1 = min(y0 + 1u, p[2] - 1u);
  let row0 = plane + (p[0] + y0) * wid + p[1];
  let row1 = plane + (p[0] + y1) * wid + p[1];
  let scale_x = f32(p[3]) / f32(wid);`,
        element: /* wgsl */ `
    let fx = max((f32(xs) + 0.5) * scale_x - 0.5, 0.0);
    let x0 = min(u32(fx), p[3] - 1u);
    let lx = fx - f32(x0);
    let x1 = min(x0 + 1u, p[3] - 1u);
    let v = (1.0 - ly) * ((1.0 - lx) * f32(pixel(row0 + x0)) + lx * f32(pixel(row0 + x1))) +
        ly * ((1.0 - lx) * f32(pixel(row1 + x0)) + lx * f32(pixel(row1 + x1)));`,
      };
  }
}

/**
 * The same result as {@link augmentPixelsWgsl} with one invocation per image row (b, c, y): the index arithmetic
 * (integer division is scalar on llvmpipe), the sample's parameters and the row's crop geometry are computed once
 * per row instead of once per element. Bindings: sizes (n = B·C·H rows), out, pixels, params (absent when
 * nothing is random: a pure normalise).
 *
 * With RandAugment the work is staged: `stage` "crop" writes the cropped, flipped 0..255 values (rounded, as the
 * uint8 image RandAugment sees) to a float scratch instead; "normalise" reads such a scratch (binding 2, f32)
 * and applies only the normalisation and erasing.
 */
export function augmentRowsWgsl(spec: AugmentSpec, stage: "full" | "crop" | "normalise" = "full"): string {
  const wg = AUGMENT_WORKGROUP;
  if (stage === "normalise") spec = { ...spec, crop: "none", flip: false };
  if (stage === "crop") spec = { ...spec, erase: false };
  const random = spec.crop !== "none" || spec.flip || spec.erase;
  const loadParams = random
    ? /* wgsl */ `
  var p: array<u32, ${AUGMENT_PARAM_WORDS}>;
  for (var k = 0u; k < ${AUGMENT_PARAM_WORDS}u; k++) { p[k] = params[b * ${AUGMENT_PARAM_WORDS}u + k]; }`
    : `let p = ${identityParams("0u")};`;
  const crop = rowCropWgsl(spec.crop);
  const erase = spec.erase
    ? /* wgsl */ `
    if (in_erase_rows && x - p[6] < p[8]) {
      let i = out_row + x;
      let u1 = random_uniform(p[9], 2u * i);
      let u2 = random_uniform(p[9], 2u * i + 1u);
      value = sqrt(-2.0 * log(1.0 - u1)) * cos(6.2831853 * u2 - 3.14159265);
    }`
    : "";
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
${sizesWgsl(spec.channels)}
${RANDOM_WGSL}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
${
    stage === "normalise"
      ? /* wgsl */ `
@group(0) @binding(2) var<storage, read> scratch: array<f32>;
fn pixel(index: u32) -> u32 { return u32(scratch[index]); }`
      : /* wgsl */ `
@group(0) @binding(2) var<storage, read> pixels: array<u32>;
fn pixel(index: u32) -> u32 {
  return (pixels[index >> 2u] >> ((index & 3u) * 8u)) & 255u;
}`
  }
${random ? "@group(0) @binding(3) var<storage, read> params: array<u32>;" : ""}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = linear_index(gid, nwg);
  if (r >= sizes.n) { return; }
  let hgt = sizes.height;
  let wid = sizes.width;
  let plane_rows = ${spec.channels}u * hgt;
  let b = r / plane_rows;
  let cy = r - b * plane_rows;
  let c = cy / hgt;
  let y = cy - c * hgt;
  ${loadParams}
  let flip = ${spec.flip ? "p[4] != 0u" : "false"};
  let plane = (b * ${spec.channels}u + c) * hgt * wid;
  let out_row = r * wid;
  let norm = sizes.norm[c];
  let in_erase_rows = y - p[5] < p[7];
  ${crop.row}
  for (var x = 0u; x < wid; x++) {
    let xs = select(x, wid - 1u - x, flip);
    ${crop.element}
    ${stage === "crop" ? "let value = floor(v + 0.5);" : "var value = (v / 255.0 - norm.x) / norm.y;"}
    ${erase}
    out[out_row + x] = value;
  }
}
`;
}

const mixBlockWgsl = (binding: number, vectors: number) => /* wgsl */ `
@group(0) @binding(${binding}) var<uniform> mix_block: array<vec4<u32>, ${vectors}>;
fn mix_word(k: u32) -> u32 {
  let w = sizes.word + k;
  return mix_block[w >> 2u][w & 3u];
}
`;

/**
 * Mixup / cutmix in place, sample b paired with B − 1 − b: one invocation per image row (s, c, y) of the first
 * ⌈B/2⌉ samples reads both partners' elements before writing either (cutmix only touches its box's columns).
 * Bindings: sizes {n (rows), batch, per (C·H·W), height, width, word}, images (f32 [B, C, H, W]), mix block
 * (mode 0 none / 1 mixup / 2 cutmix, λ, box y0, y1, x0, x1 from word `word`).
 */
export function mixImagesWgsl(blockVectors: number): string {
  const wg = AUGMENT_WORKGROUP;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
struct Sizes { n: u32, batch: u32, per: u32, height: u32, width: u32, word: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> images: array<f32>;
${mixBlockWgsl(2, blockVectors)}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = linear_index(gid, nwg);
  if (row >= sizes.n) { return; }
  let mode = mix_word(0u);
  let rows_per_sample = sizes.per / sizes.width;
  let s = row / rows_per_sample;
  let partner = sizes.batch - 1u - s;
  if (mode == 0u || partner == s) { return; }
  let r = (row - s * rows_per_sample) * sizes.width;
  let ia = s * sizes.per + r;
  let ib = partner * sizes.per + r;
  if (mode == 1u) {
    let lam = bitcast<f32>(mix_word(1u));
    for (var x = 0u; x < sizes.width; x++) {
      let a = images[ia + x];
      let b = images[ib + x];
      images[ia + x] = lam * a + (1.0 - lam) * b;
      images[ib + x] = lam * b + (1.0 - lam) * a;
    }
  } else {
    let y = (row - s * rows_per_sample) % sizes.height;
    if (y < mix_word(2u) || y >= mix_word(3u)) { return; }
    for (var x = mix_word(4u); x < mix_word(5u); x++) {
      let a = images[ia + x];
      images[ia + x] = images[ib + x];
      images[ib + x] = a;
    }
  }
}
`;
}

/**
 * Soft targets: t[b, k] = λ·smooth(y_b)[k] + (1 − λ)·smooth(y_{B−1−b})[k], smooth = off + (on − off)·onehot
 * (λ = 1 when the mode is none). Bindings: sizes {n, batch, classes, word, off, on}, targets (f32 [B, K]),
 * labels (i32 [B]), mix block.
 */
export function mixTargetsWgsl(blockVectors: number): string {
  const wg = AUGMENT_WORKGROUP;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
struct Sizes { n: u32, batch: u32, classes: u32, word: u32, off: f32, on: f32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> targets: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
${mixBlockWgsl(3, blockVectors)}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  let b = i / sizes.classes;
  let k = i32(i - b * sizes.classes);
  let lam = select(1.0, bitcast<f32>(mix_word(1u)), mix_word(0u) != 0u);
  let own = select(sizes.off, sizes.on, labels[b] == k);
  let other = select(sizes.off, sizes.on, labels[sizes.batch - 1u - b] == k);
  targets[i] = lam * own + (1.0 - lam) * other;
}
`;
}
