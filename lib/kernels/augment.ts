/**
 * Typed wrappers of the augmentation kernels (`shaders/augment.ts`, which documents the pixel packing and which
 * random draw decides what), and the host side of mixup / cutmix: a seeded per-batch sampler and the writer of its
 * result into a {@link UniformBlock} the plan reads, so one recorded plan serves every step.
 */
import { grid1d, type Plan, UniformBlock } from "../gpu/plan.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { deriveSeed, randomU32 } from "../gpu/random.ts";
import {
  AUGMENT_PARAM_WORDS,
  AUGMENT_SAMPLE_WORKGROUP,
  AUGMENT_WORKGROUP,
  augmentParamsWgsl,
  augmentPixelsWgsl,
  augmentRowsWgsl,
  type AugmentSpec,
  type CropMode,
  MIX_PARAM_WORDS,
  mixImagesWgsl,
  mixTargetsWgsl,
  RAND_AUGMENT_LAYERS,
  RAND_AUGMENT_OPS,
  RAND_AUGMENT_PARTS,
  randAugmentApplyWgsl,
  randAugmentLutWgsl,
} from "../../shaders/augment.ts";
import { type Seed, seedBinding } from "./dropout.ts";
import { expectElements, positiveInt } from "./_check.ts";

export { AUGMENT_PARAM_WORDS, MIX_PARAM_WORDS, RAND_AUGMENT_LAYERS, RAND_AUGMENT_OPS };

/** One of timm's RandAugment ops (the `inc1` "increasing" set). */
export type RandAugmentOp = typeof RAND_AUGMENT_OPS[number];

/**
 * RandAugment (timm `rand-m9-mstd0.5-inc1` by default): {@link RAND_AUGMENT_LAYERS} layers, each an op chosen
 * uniformly from `ops`, applied with probability `prob` at magnitude N(magnitude, magnitudeStd) clipped to
 * [0, 10], on the cropped and flipped uint8 image before normalisation.
 */
export interface RandAugmentOptions {
  /** Two f32 [B, C, H, W] tensors for the staged images (ping-pong between layers). */
  scratch: readonly [Tensor, Tensor];
  /** u32 [B, C, 256]: the lookup tables of point ops. */
  lut: Tensor;
  /** Default 9. */
  magnitude?: number;
  /** Default 0.5. */
  magnitudeStd?: number;
  /** Probability that a layer applies its op (timm AugmentOp). Default 0.5. */
  prob?: number;
  /** Default: all of {@link RAND_AUGMENT_OPS}. */
  ops?: readonly RandAugmentOp[];
}

/** Range of a random resized crop: area fraction [scaleMin, scaleMax] and aspect ratio [ratioMin, ratioMax]. */
export interface ResizedCropOptions {
  /** Smallest area fraction (torchvision 0.08; SPEC §4 0.8). Default 0.8. */
  scaleMin?: number;
  /** Largest area fraction. Default 1. */
  scaleMax?: number;
  /** Default 3/4. */
  ratioMin?: number;
  /** Default 4/3. */
  ratioMax?: number;
}

/** Sizes and choices of {@link augmentImages}. */
export interface AugmentOptions {
  /** Images in the batch (B). */
  batch: number;
  /** Channels per image (C). */
  channels: number;
  /** Image height (H). */
  height: number;
  /** Image width (W). */
  width: number;
  /** Per-channel mean of u8/255 values (e.g. CIFAR-10 (0.4914, 0.4822, 0.4465)). */
  mean: readonly number[];
  /** Per-channel standard deviation. */
  std: readonly number[];
  /** Random crop with this zero padding (torchvision RandomCrop(size, padding)): offset uniform in [0, 2·pad]. */
  pad?: number;
  /** Random resized crop instead of the padded crop (`true`: the SPEC §4 defaults). */
  resizedCrop?: ResizedCropOptions | boolean;
  /** Horizontal flip with probability 0.5. */
  flip?: boolean;
  /** Random-erasing probability (timm RandomErasing, 'pixel' mode). Default 0. */
  reprob?: number;
  /** RandAugment between flip and normalisation (needs the default variant). */
  randAugment?: RandAugmentOptions;
  /** Needed when any option is random. */
  seed?: Seed;
  /**
   * "fast" (default): a parameter pass, then one invocation per image row; "element": one invocation per output
   * element; "naive": no parameter pass, every element recomputes its sample's draws. All give the same result.
   */
  variant?: "fast" | "element" | "naive";
}

/** u32 words holding `count` bytes packed four per word (see `shaders/augment.ts`). */
export function pixelWords(count: number): number {
  return Math.ceil(count / 4);
}

/** Packs bytes (a uint8 [B, C, H, W] batch) into little-endian u32 words for upload as the `pixels` tensor. */
export function packPixels(bytes: Uint8Array): Uint32Array {
  const words = new Uint32Array(pixelWords(bytes.length));
  new Uint8Array(words.buffer).set(bytes); // every platform Deno's WebGPU runs on is little-endian
  return words;
}

/** The options of {@link augmentImages} resolved to what the kernels receive. */
export interface ResolvedAugment {
  /** What the kernels are specialised for. */
  spec: AugmentSpec;
  /** Zero padding of the random crop (0: none). */
  pad: number;
  /** Resized crop: smallest area fraction. */
  scaleMin: number;
  /** Resized crop: largest area fraction. */
  scaleMax: number;
  /** Resized crop: smallest aspect ratio. */
  ratioMin: number;
  /** Resized crop: largest aspect ratio. */
  ratioMax: number;
  /** Random-erasing probability. */
  reprob: number;
  /** Erasing: smallest area fraction (timm 0.02). */
  eraseAreaMin: number;
  /** Erasing: largest area fraction (timm 1/3). */
  eraseAreaMax: number;
  /** Erasing: smallest aspect ratio (timm 0.3; the largest is its inverse). */
  eraseAspectMin: number;
  /** Bit i set: op i of {@link RAND_AUGMENT_OPS} may be chosen (0: no RandAugment). */
  raMask: number;
  /** RandAugment magnitude (0..10). */
  raMagnitude: number;
  /** RandAugment magnitude standard deviation. */
  raStd: number;
  /** RandAugment per-layer probability. */
  raProb: number;
}

/** Validates {@link AugmentOptions} and fills in the defaults (shared with the test reference). */
export function resolveAugment(kernel: string, o: AugmentOptions): ResolvedAugment {
  for (const name of ["batch", "channels", "height", "width"] as const) positiveInt(kernel, name, o[name]);
  for (const name of ["mean", "std"] as const) {
    if (o[name].length !== o.channels) {
      throw new TypeError(
        `${kernel}: ${name} has ${o[name].length} values, expected one per channel (${o.channels})`,
      );
    }
  }
  for (const s of o.std) if (!(s > 0)) throw new RangeError(`${kernel}: std must be > 0, got ${s}`);
  const pad = o.pad ?? 0;
  if (!Number.isInteger(pad) || pad < 0) {
    throw new RangeError(`${kernel}: pad must be an integer ≥ 0, got ${pad}`);
  }
  const rc = o.resizedCrop === true ? {} : o.resizedCrop || undefined;
  if (rc && pad > 0) {
    throw new TypeError(`${kernel}: choose either pad (random crop) or resizedCrop, not both`);
  }
  const scaleMin = rc?.scaleMin ?? 0.8, scaleMax = rc?.scaleMax ?? 1;
  const ratioMin = rc?.ratioMin ?? 3 / 4, ratioMax = rc?.ratioMax ?? 4 / 3;
  if (!(scaleMin > 0 && scaleMin <= scaleMax && scaleMax <= 1)) {
    throw new RangeError(`${kernel}: need 0 < scaleMin ≤ scaleMax ≤ 1, got ${scaleMin}..${scaleMax}`);
  }
  if (!(ratioMin > 0 && ratioMin <= ratioMax)) {
    throw new RangeError(`${kernel}: need 0 < ratioMin ≤ ratioMax, got ${ratioMin}..${ratioMax}`);
  }
  const reprob = o.reprob ?? 0;
  if (!(reprob >= 0 && reprob <= 1)) {
    throw new RangeError(`${kernel}: reprob must be in [0, 1], got ${reprob}`);
  }
  const crop: CropMode = rc ? "resized" : pad > 0 ? "pad" : "none";
  const ra = o.randAugment;
  let raMask = 0;
  for (const op of ra ? ra.ops ?? RAND_AUGMENT_OPS : []) {
    const i = RAND_AUGMENT_OPS.indexOf(op);
    if (i < 0) throw new RangeError(`${kernel}: unknown RandAugment op "${op}"`);
    raMask |= 1 << i;
  }
  if (ra && raMask === 0) throw new RangeError(`${kernel}: randAugment.ops is empty`);
  const raMagnitude = ra?.magnitude ?? 9, raStd = ra?.magnitudeStd ?? 0.5, raProb = ra?.prob ?? 0.5;
  if (!(raMagnitude >= 0 && raMagnitude <= 10 && raStd >= 0 && raProb >= 0 && raProb <= 1)) {
    throw new RangeError(`${kernel}: need RandAugment magnitude in [0, 10], std ≥ 0, prob in [0, 1]`);
  }
  return {
    spec: { channels: o.channels, crop, flip: o.flip ?? false, erase: reprob > 0, randAugment: raMask !== 0 },
    pad,
    scaleMin,
    scaleMax,
    ratioMin,
    ratioMax,
    reprob,
    eraseAreaMin: 0.02,
    eraseAreaMax: 1 / 3,
    eraseAspectMin: 0.3,
    raMask,
    raMagnitude,
    raStd,
    raProb,
  };
}

/** True when the resolved options draw random numbers (then a seed and a params tensor are needed). */
export function isRandom(spec: AugmentSpec): boolean {
  return spec.crop !== "none" || spec.flip || spec.erase || (spec.randAugment ?? false);
}

/**
 * Training-time augmentation of a uint8 batch into normalised float32 images (SPEC §4, torchvision/timm
 * semantics): per sample a random crop with zero padding `pad` or a random resized crop (bilinear), then a
 * horizontal flip with probability 0.5, then optionally RandAugment, then out = (v/255 − mean[c])/std[c], then
 * random erasing with probability `reprob` (per-pixel standard-normal values). With every option off it is exactly
 * normalise(u8/255).
 *
 * - `out`: f32 [B, C, H, W].
 * - `pixels`: ⌈B·C·H·W/4⌉ u32 words holding the uint8 [B, C, H, W] batch, four bytes per word, little-endian
 *   (upload the raw bytes; {@link packPixels} pads them).
 * - `params`: u32 [B, {@link AUGMENT_PARAM_WORDS}] scratch receiving each sample's crop box, flip and erasing box
 *   (layout in `shaders/augment.ts`); may be null when nothing is random or with the naive variant.
 *
 * Draws are counter-based (seed from `opts.seed`, a constant or a block word rewritten per step), so the result
 * is a pure function of (pixels, seed). torchvision's RandomResizedCrop 10-attempt loop and its centre-crop
 * fallback are reproduced exactly, only with this RNG; the resize is torch `interpolate(bilinear,
 * align_corners=False)` without antialiasing on the u8 values (PIL's filter differs slightly), without
 * requantising to u8 (with RandAugment it is rounded to u8, as the image RandAugment sees).
 *
 * RandAugment follows timm's `rand-m9-mstd0.5-inc1` with PIL semantics for all 15 ops (lookup tables for the point
 * ops, PIL's float32 blend truncation for the enhancements, PIL's SMOOTH filter for Sharpness, PIL's affine
 * transform with bilinear sampling and a round(255·mean) fill for the geometric ops). Approximations: the affine
 * ops always sample bilinearly (timm picks bilinear or bicubic at random); AutoContrast's table is computed in exact
 * integers (PIL's float64 formula can land one level lower at the top of the range); argument and coordinate
 * arithmetic is float32 (PIL: float64), so a value can rarely round to the neighbouring grey level.
 * It costs 2 + 4·{@link RAND_AUGMENT_LAYERS} extra dispatches and the scratch tensors of {@link RandAugmentOptions}.
 */
export function augmentImages(
  plan: Plan,
  out: Tensor,
  pixels: Tensor,
  params: Tensor | null,
  opts: AugmentOptions,
): void {
  const k = "augmentImages";
  const r = resolveAugment(k, opts);
  const { batch, channels, height, width } = opts;
  const n = batch * channels * height * width;
  expectElements(k, out, n, "batch·channels·height·width floats");
  expectElements(k, pixels, pixelWords(n), "u32 words of batch·channels·height·width bytes");
  const random = isRandom(r.spec);
  const naive = opts.variant === "naive";
  if (random && opts.seed === undefined) {
    throw new TypeError(`${k}: a seed is needed for random augmentation`);
  }
  if (random && !naive) {
    if (params === null) {
      throw new TypeError(`${k}: a params tensor [${batch}, ${AUGMENT_PARAM_WORDS}] is needed`);
    }
    expectElements(k, params, batch * AUGMENT_PARAM_WORDS, `[batch, ${AUGMENT_PARAM_WORDS}] u32 words`);
  }
  const s = random ? seedBinding(k, opts.seed!) : null;
  /** The shared `Sizes` uniform with `count` work items for a dispatch (and the RandAugment layer it applies). */
  const sizes = (count: number, layer = 0) => ({
    uniform: [
      count,
      batch,
      height,
      width,
      r.pad,
      s?.field ?? 0,
      r.raMask,
      layer,
      ...[
        r.scaleMin,
        r.scaleMax,
        r.ratioMin,
        r.ratioMax,
        r.reprob,
        r.eraseAreaMin,
        r.eraseAreaMax,
        r.eraseAspectMin,
        r.raMagnitude,
        r.raStd,
        r.raProb,
        0,
      ].map((f32) => ({ f32 })),
      ...opts.mean.flatMap((m, c) => [{ f32: m }, { f32: opts.std[c] }, 0, 0]),
    ],
  });
  const rows = batch * channels * height;
  if (!random) {
    if (opts.variant === "element") {
      const code = augmentPixelsWgsl(r.spec, { params: false, seed: null });
      plan.dispatch(`${k} (per element)`, code, [sizes(n), out, pixels], grid1d(n, AUGMENT_WORKGROUP));
    } else {
      plan.dispatch(k, augmentRowsWgsl(r.spec), [sizes(rows), out, pixels], grid1d(rows, AUGMENT_WORKGROUP));
    }
    return;
  }
  if (r.spec.randAugment && opts.variant !== undefined && opts.variant !== "fast") {
    throw new TypeError(`${k}: randAugment needs the default ("fast") variant`);
  }
  if (naive) {
    plan.dispatch(
      `${k} (naive)`,
      augmentPixelsWgsl(r.spec, { params: false, seed: s!.layout }),
      [sizes(n), out, pixels, ...s!.bindings],
      grid1d(n, AUGMENT_WORKGROUP),
    );
    return;
  }
  plan.dispatch(
    `${k}: sample parameters`,
    augmentParamsWgsl(r.spec, s!.layout),
    [sizes(batch), params!, ...s!.bindings],
    Math.ceil(batch / AUGMENT_SAMPLE_WORKGROUP),
  );
  if (opts.variant === "element") {
    plan.dispatch(
      `${k} (per element)`,
      augmentPixelsWgsl(r.spec, { params: true }),
      [sizes(n), out, pixels, params!],
      grid1d(n, AUGMENT_WORKGROUP),
    );
    return;
  }
  if (!r.spec.randAugment) {
    plan.dispatch(
      k,
      augmentRowsWgsl(r.spec),
      [sizes(rows), out, pixels, params!],
      grid1d(rows, AUGMENT_WORKGROUP),
    );
    return;
  }
  // RandAugment: crop and flip into scratch 0, the layers ping-pong between the scratches, then normalise.
  const ra = opts.randAugment!;
  const [a, b] = ra.scratch;
  expectElements(k, a, n, "batch·channels·height·width floats");
  expectElements(k, b, n, "batch·channels·height·width floats");
  expectElements(k, ra.lut, batch * channels * 256, "batch·channels·256 u32 words");
  const cropParams = r.spec.crop !== "none" || r.spec.flip ? [params!] : [];
  plan.dispatch(
    `${k}: crop`,
    augmentRowsWgsl(r.spec, "crop"),
    [sizes(rows), a, pixels, ...cropParams],
    grid1d(rows, AUGMENT_WORKGROUP),
  );
  let [src, dst] = [a, b];
  for (let layer = 0; layer < RAND_AUGMENT_LAYERS; layer++) {
    plan.dispatch(
      `${k}: RandAugment lookup tables`,
      randAugmentLutWgsl(channels),
      [sizes(batch * channels, layer), ra.lut, src, params!],
      Math.ceil((batch * channels) / AUGMENT_SAMPLE_WORKGROUP),
    );
    for (const part of RAND_AUGMENT_PARTS) {
      plan.dispatch(
        `${k}: RandAugment ${part}`,
        randAugmentApplyWgsl(channels, part),
        [sizes(batch * height, layer), dst, src, params!, ...(part === "pixelwise" ? [ra.lut] : [])],
        grid1d(batch * height, AUGMENT_WORKGROUP),
      );
    }
    [src, dst] = [dst, src];
  }
  plan.dispatch(
    `${k}: normalise`,
    augmentRowsWgsl(r.spec, "normalise"),
    [sizes(rows), out, src, ...(r.spec.erase ? [params!] : [])],
    grid1d(rows, AUGMENT_WORKGROUP),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Mixup / cutmix

/** timm Mixup settings (SPEC §4: mixup α 0.8, cutmix α 1.0, switch probability 0.5, applied to every batch). */
export interface MixOptions {
  /** Beta(α, α) of mixup; 0 disables mixup. Default 0.8. */
  mixupAlpha?: number;
  /** Beta(α, α) of cutmix; 0 disables cutmix. Default 1.0. */
  cutmixAlpha?: number;
  /** Probability of cutmix when both are enabled. Default 0.5. */
  switchProb?: number;
  /** Probability of mixing a batch at all. Default 1. */
  prob?: number;
  /** Image height (H). */
  height: number;
  /** Image width (W). */
  width: number;
}

/** One batch's mixing: the mode, λ (corrected to the box area for cutmix), and the cutmix box [y0, y1) × [x0, x1). */
export interface MixSample {
  /** Which mix this batch gets. */
  mode: "mixup" | "cutmix" | "none";
  /** Weight of the sample itself (1 − λ of its partner). */
  lambda: number;
  /** Cutmix box [y0, y1) × [x0, x1) (empty otherwise). */
  box: { y0: number; y1: number; x0: number; x1: number };
}

/** A seeded stream of doubles in [0, 1) (53 bits) from the counter-based RNG. */
class HostStream {
  #counter = 0;
  constructor(readonly seed: number) {}
  uniform(): number {
    const hi = randomU32(this.seed, this.#counter++) >>> 5, lo = randomU32(this.seed, this.#counter++) >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }
  /** Integer uniform in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.min(hi - lo - 1, Math.floor(this.uniform() * (hi - lo)));
  }
  normal(): number {
    const u = 1 - this.uniform(), v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  /** Gamma(shape, 1) by Marsaglia–Tsang; shape < 1 boosted by U^(1/shape). */
  gamma(shape: number): number {
    if (shape < 1) return this.gamma(shape + 1) * Math.pow(1 - this.uniform(), 1 / shape);
    const d = shape - 1 / 3, c = 1 / Math.sqrt(9 * d);
    for (;;) {
      const x = this.normal();
      const t = 1 + c * x;
      if (t <= 0) continue;
      const v = t * t * t, u = 1 - this.uniform();
      if (u < 1 - 0.0331 * x * x * x * x) return d * v;
      if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  }
  beta(a: number, b: number): number {
    const x = this.gamma(a), y = this.gamma(b);
    return x / (x + y);
  }
}

/** The `site` of {@link deriveSeed} used by {@link sampleMix}. */
export const MIX_SEED_SITE = 0x4d49584d; // "MIXM"

/**
 * The mixing of batch `step` of a run seeded `seed` (timm Mixup._params_per_batch and cutmix_bbox_and_lam with
 * correct_lam): with probability `prob` mix; cutmix with probability `switchProb` when both are enabled; λ ~
 * Beta(α, α) (Marsaglia–Tsang Gamma sampler); for cutmix a box of side ⌊H·√(1 − λ)⌋ × ⌊W·√(1 − λ)⌋ centred
 * uniformly, clipped, and λ = 1 − box area / (H·W). Deterministic for (seed, step).
 */
export function sampleMix(seed: number, step: number, opts: MixOptions): MixSample {
  const mixupAlpha = opts.mixupAlpha ?? 0.8, cutmixAlpha = opts.cutmixAlpha ?? 1;
  const switchProb = opts.switchProb ?? 0.5, prob = opts.prob ?? 1;
  const { height, width } = opts;
  positiveInt("sampleMix", "height", height);
  positiveInt("sampleMix", "width", width);
  if (!(mixupAlpha >= 0 && cutmixAlpha >= 0)) throw new RangeError("sampleMix: alphas must be ≥ 0");
  const none: MixSample = { mode: "none", lambda: 1, box: { y0: 0, y1: 0, x0: 0, x1: 0 } };
  const rng = new HostStream(deriveSeed(seed, step, MIX_SEED_SITE));
  if (!(rng.uniform() < prob)) return none;
  let cutmix: boolean;
  let lambda: number;
  if (mixupAlpha > 0 && cutmixAlpha > 0) {
    cutmix = rng.uniform() < switchProb;
    lambda = cutmix ? rng.beta(cutmixAlpha, cutmixAlpha) : rng.beta(mixupAlpha, mixupAlpha);
  } else if (mixupAlpha > 0) {
    cutmix = false;
    lambda = rng.beta(mixupAlpha, mixupAlpha);
  } else if (cutmixAlpha > 0) {
    cutmix = true;
    lambda = rng.beta(cutmixAlpha, cutmixAlpha);
  } else return none;
  if (lambda === 1) return none;
  if (!cutmix) return { mode: "mixup", lambda, box: none.box };
  const ratio = Math.sqrt(1 - lambda);
  const cutH = Math.floor(height * ratio), cutW = Math.floor(width * ratio);
  const cy = rng.int(0, height), cx = rng.int(0, width);
  const clip = (v: number, hi: number) => Math.min(Math.max(v, 0), hi);
  const box = {
    y0: clip(cy - (cutH >> 1), height),
    y1: clip(cy + (cutH >> 1), height),
    x0: clip(cx - (cutW >> 1), width),
    x1: clip(cx + (cutW >> 1), width),
  };
  return { mode: "cutmix", lambda: 1 - ((box.y1 - box.y0) * (box.x1 - box.x0)) / (height * width), box };
}

/** Where a batch's mix parameters live: words `word`..`word + 5` of `block` (see {@link writeMixParams}). */
export type MixParams = UniformBlock | { block: UniformBlock; word: number };

function mixSlot(kernel: string, p: MixParams): { block: UniformBlock; word: number } {
  const slot = p instanceof UniformBlock ? { block: p, word: 0 } : p;
  if (!(slot.block instanceof UniformBlock)) {
    throw new TypeError(`${kernel}: mixParams.block must be a UniformBlock`);
  }
  if (!Number.isInteger(slot.word) || slot.word < 0 || slot.word + MIX_PARAM_WORDS > slot.block.u32.length) {
    throw new RangeError(
      `${kernel}: mix words ${slot.word}..${
        slot.word + MIX_PARAM_WORDS - 1
      } do not fit a block of ${slot.block.u32.length}`,
    );
  }
  return slot;
}

/**
 * Writes a {@link MixSample} into its block (mode 0 none / 1 mixup / 2 cutmix, λ as f32, box y0, y1, x0, x1) and
 * flushes the block, so the next submission of a plan recorded with {@link mixBatch} uses it.
 */
export function writeMixParams(params: MixParams, sample: MixSample): void {
  const { block, word } = mixSlot("writeMixParams", params);
  block.u32[word] = sample.mode === "none" ? 0 : sample.mode === "mixup" ? 1 : 2;
  block.f32[word + 1] = sample.lambda;
  const { y0, y1, x0, x1 } = sample.box;
  block.u32.set([y0, y1, x0, x1], word + 2);
  block.flush();
}

/** Sizes of {@link mixBatch}. */
export interface MixBatchOptions {
  /** Images in the batch (B). */
  batch: number;
  /** Channels per image (C). */
  channels: number;
  /** Image height (H). */
  height: number;
  /** Image width (W). */
  width: number;
  /** Classes (K): the targets' width. */
  classes: number;
  /** Label smoothing ε (SPEC §4: 0.1): off = ε/K, on = 1 − ε + off. Default 0. */
  smoothing?: number;
}

/**
 * timm Mixup on the GPU, the parameters read from `mixParams` (written per step by {@link writeMixParams}):
 * sample b is mixed with sample B − 1 − b (the flipped batch). Mixup: x_b = λ·x_b + (1 − λ)·x_{B−1−b}; cutmix:
 * the box of x_{B−1−b} pasted into x_b. `images` f32 [B, C, H, W] is updated in place (each invocation reads both
 * partners before writing). `targets` f32 [B, classes] = λ·smooth(onehot(y_b)) + (1 − λ)·smooth(onehot(y_{B−1−b}))
 * from `labels` i32 [B] (a label outside [0, classes) gets no hot entry). Mode none: images untouched,
 * targets = smooth(onehot(y)).
 */
export function mixBatch(
  plan: Plan,
  images: Tensor,
  targets: Tensor,
  labels: Tensor,
  mixParams: MixParams,
  opts: MixBatchOptions,
): void {
  const k = "mixBatch";
  for (const name of ["batch", "channels", "height", "width", "classes"] as const) {
    positiveInt(k, name, opts[name]);
  }
  const { batch, channels, height, width, classes } = opts;
  const smoothing = opts.smoothing ?? 0;
  if (!(smoothing >= 0 && smoothing <= 1)) {
    throw new RangeError(`${k}: smoothing must be in [0, 1], got ${smoothing}`);
  }
  const per = channels * height * width;
  expectElements(k, images, batch * per, "batch·channels·height·width floats");
  expectElements(k, targets, batch * classes, "batch·classes floats");
  expectElements(k, labels, batch, "one int32 label per sample");
  const { block, word } = mixSlot(k, mixParams);
  const vectors = block.buffer.size / 16;
  const n = Math.ceil(batch / 2) * channels * height; // rows
  plan.dispatch(
    `${k}: images`,
    mixImagesWgsl(vectors),
    [{ uniform: [n, batch, per, height, width, word] }, images, block.binding()],
    grid1d(n, AUGMENT_WORKGROUP),
  );
  const off = smoothing / classes;
  plan.dispatch(
    `${k}: targets`,
    mixTargetsWgsl(vectors),
    [
      { uniform: [batch * classes, batch, classes, word, { f32: off }, { f32: 1 - smoothing + off }] },
      targets,
      labels,
      block.binding(),
    ],
    grid1d(batch * classes, AUGMENT_WORKGROUP),
  );
}
