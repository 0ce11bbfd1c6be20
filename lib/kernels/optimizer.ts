/**
 * Typed wrappers of the optimizer kernels (`shaders/optimizer.ts`): zero fill, global gradient norm, clip scale,
 * AdamW and the weights' moving average. All of them run inside a training step's single submission; nothing
 * here reads back.
 */
import type { Gpu } from "../gpu/device.ts";
import { type Binding, grid1d, type Plan, UniformBlock } from "../gpu/plan.ts";
import { type Arena, type Tensor, uploadTensor, VIEW_ALIGNMENT } from "../gpu/tensor.ts";
import {
  ADAMW_HYPER_WORDS,
  ADAMW_VEC4_PER_INVOCATION,
  adamwWgsl,
  clipScaleWgsl,
  DECAY_BLOCK,
  EMA_VEC4_PER_INVOCATION,
  emaWgsl,
  gradNormFinishWgsl,
  gradNormPartialsWgsl,
  NORM_MAX_PARTIALS,
  NORM_VEC4_PER_INVOCATION,
  OPTIMIZER_WORKGROUP,
  ZERO_VEC4_PER_INVOCATION,
  zeroWgsl,
} from "../../shaders/optimizer.ts";

export { ADAMW_HYPER_WORDS, DECAY_BLOCK, NORM_MAX_PARTIALS };

/** Fills a tensor (e.g. a whole gradient Arena, `arena.whole()`, up to 32 M floats) with zeros: vec4 stores, then
 * the ≤ 3 trailing floats. */
export function zero(plan: Plan, t: Tensor): void {
  const n = t.size;
  if (n === 0) return;
  // Bound views start 256-byte aligned (WebGPU's storage offset rule), so a vec4 view of the body always exists.
  const vecCount = Math.floor(n / 4);
  if (vecCount > 0) {
    plan.dispatch(
      "zero",
      zeroWgsl(),
      [{ uniform: [vecCount] }, { buffer: t.buffer, offset: t.offset, size: vecCount * 16 }],
      grid1d(Math.ceil(vecCount / ZERO_VEC4_PER_INVOCATION), OPTIMIZER_WORKGROUP),
    );
  }
  if (n > vecCount * 4) {
    // A storage binding cannot start at the tail, so bind the whole view and skip ahead.
    plan.dispatch("zeroTail", zeroTailWgsl, [{ uniform: [vecCount * 4, n] }, t], 1);
  }
}

const zeroTailWgsl = /* wgsl */ `
struct Sizes { first: u32, n: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(4)
fn main(@builtin(local_invocation_index) lane: u32) {
  let i = sizes.first + lane;
  if (i < sizes.n) { out[i] = 0.0; }
}
`;

/**
 * Number of partial sums {@link gradNormSquared} uses for `n` elements: one per 1024 floats, rounded up to a
 * multiple of 64. A partials tensor of {@link NORM_MAX_PARTIALS} floats suffices for every bindable tensor.
 */
export function gradNormPartialCount(n: number): number {
  const runs = Math.ceil(Math.floor(n / 4) / NORM_VEC4_PER_INVOCATION);
  return Math.max(1, Math.ceil(runs / OPTIMIZER_WORKGROUP)) * OPTIMIZER_WORKGROUP;
}

/**
 * out[0] = Σ grads² over a flat tensor (up to 32 M floats), in two deterministic stages: per-invocation vec4 runs
 * of 1024 floats into `partials`, then one workgroup adds them in a fixed order. No float atomics: the same input
 * gives the same bits.
 *
 * @param out f32 [≥ 1]
 * @param grads f32, any shape (e.g. `gradArena.whole()`)
 * @param partials f32 scratch of at least {@link gradNormPartialCount}(grads.size) elements
 */
export function gradNormSquared(plan: Plan, out: Tensor, grads: Tensor, partials: Tensor): void {
  const n = grads.size;
  const count = gradNormPartialCount(n);
  if (out.size < 1) {
    throw new TypeError(`gradNormSquared: ${out.label} is empty, expected at least 1 element`);
  }
  if (partials.size < count) {
    throw new TypeError(
      `gradNormSquared: ${partials.label} has ${partials.size} elements, expected at least ${count} partial sums`,
    );
  }
  if (grads.offset % 16 !== 0) {
    throw new RangeError(
      `gradNormSquared: ${grads.label} starts at byte ${grads.offset}, not 16-byte aligned`,
    );
  }
  const vecCount = Math.floor(n / 4);
  const vecBytes = Math.max(16, vecCount * 16);
  if (grads.offset + vecBytes > grads.buffer.size) {
    throw new RangeError(
      `gradNormSquared: ${grads.label} is too close to the end of its buffer for a vec4 view`,
    );
  }
  plan.dispatch(
    "gradNormPartials",
    gradNormPartialsWgsl(),
    [
      { uniform: [vecCount, n, count] },
      partials,
      { buffer: grads.buffer, offset: grads.offset, size: vecBytes },
      grads,
    ],
    count / OPTIMIZER_WORKGROUP,
  );
  plan.dispatch("gradNormFinish", gradNormFinishWgsl(), [{ uniform: [count] }, out, partials], 1);
}

/**
 * scale[0] = min(1, maxNorm / (sqrt(normSquared[0]) + 1e-6)), the factor of PyTorch's clip_grad_norm_, for
 * {@link adamwUpdate}'s `gradScale`.
 */
export function clipScale(
  plan: Plan,
  scale: Tensor,
  normSquared: Tensor,
  { maxNorm }: { maxNorm: number },
): void {
  if (!(maxNorm > 0)) throw new RangeError(`clipScale: maxNorm ${maxNorm} is not positive`);
  if (scale.size < 1) throw new TypeError(`clipScale: ${scale.label} is empty`);
  if (normSquared.size < 1) throw new TypeError(`clipScale: ${normSquared.label} is empty`);
  plan.dispatch("clipScale", clipScaleWgsl(), [{ uniform: [{ f32: maxNorm }] }, scale, normSquared], 1);
}

/** A uniform block for {@link adamwUpdate}'s hyperparameters; fill it with {@link setAdamwHyper}. */
export function createAdamwHyper(gpu: Gpu, label = "adamw-hyper"): UniformBlock {
  return new UniformBlock(gpu, ADAMW_HYPER_WORDS, label);
}

/**
 * Writes AdamW's hyperparameters for optimizer step `step` (1-based) and queues them (effective from the next
 * submission). Derived scalars are computed in float64 and rounded once, as PyTorch's Python scalars are.
 */
export function setAdamwHyper(
  hyper: UniformBlock,
  lr: number,
  beta1: number,
  beta2: number,
  eps: number,
  weightDecay: number,
  step: number,
): void {
  if (!Number.isInteger(step) || step < 1) {
    throw new RangeError(`setAdamwHyper: step ${step} is not a positive integer`);
  }
  if (hyper.f32.length < ADAMW_HYPER_WORDS) {
    throw new TypeError(
      `setAdamwHyper: the block holds ${hyper.f32.length} words, expected ${ADAMW_HYPER_WORDS}`,
    );
  }
  const f = hyper.f32;
  f[0] = lr;
  f[1] = beta1;
  f[2] = beta2;
  f[3] = eps;
  f[4] = weightDecay;
  f[5] = 1 - beta1;
  f[6] = 1 - beta2;
  f[7] = 1 - lr * weightDecay;
  f[8] = lr / (1 - beta1 ** step);
  f[9] = Math.sqrt(1 - beta2 ** step);
  f[10] = step;
  f[11] = 0;
  hyper.flush();
}

/** Options of {@link adamwUpdate}. */
export interface AdamwOptions {
  /** First element of the range, in elements of the whole-arena tensors. */
  offset: number;
  /** Number of elements. */
  length: number;
  /**
   * Apply decoupled weight decay p *= 1 − lr·wd to the whole range (true/false), or per tensor from a decay mask
   * ({@link createDecayMask}) so one dispatch updates a whole arena whose tensors differ.
   */
  decay: boolean | Tensor;
  /** f32 [1] multiplied into every gradient first, e.g. {@link clipScale}'s output. */
  gradScale?: Tensor;
  /** Use vec4 loads where the range is 4-aligned (default); false forces the scalar kernel (benchmarks). */
  vec4?: boolean;
}

/**
 * One AdamW step (PyTorch's formula and f32 operation order) over `[offset, offset + length)` of four tensors with
 * the same layout, typically whole arenas: p *= 1 − lr·wd (when `decay`, or per tensor with a decay mask);
 * m = β1·m + (1−β1)·g;
 * v = β2·v + (1−β2)·g²; p −= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps), with g = grad·gradScale[0] when given.
 * `hyper` comes from {@link createAdamwHyper} and is rewritten by {@link setAdamwHyper} each step.
 */
export function adamwUpdate(
  plan: Plan,
  params: Tensor,
  grads: Tensor,
  m: Tensor,
  v: Tensor,
  hyper: UniformBlock,
  { offset, length, decay, gradScale, vec4 = true }: AdamwOptions,
): void {
  const name = "adamwUpdate";
  for (const t of [grads, m, v]) {
    if (t.size !== params.size) {
      throw new TypeError(
        `${name}: ${t.label} has ${t.size} elements, expected ${params.size} like ${params.label}`,
      );
    }
  }
  if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0) {
    throw new RangeError(`${name}: offset ${offset} / length ${length} are not non-negative integers`);
  }
  if (offset + length > params.size) {
    throw new RangeError(`${name}: range [${offset}, ${offset + length}) overruns ${params.size} elements`);
  }
  if (gradScale && gradScale.size < 1) throw new TypeError(`${name}: ${gradScale.label} is empty`);
  const mask = typeof decay === "boolean" ? undefined : decay;
  if (mask && mask.size < Math.ceil(params.size / DECAY_BLOCK / 32)) {
    throw new TypeError(
      `${name}: decay mask ${mask.label} has ${mask.size} words, expected ${
        Math.ceil(params.size / DECAY_BLOCK / 32)
      } (one bit per ${DECAY_BLOCK} floats of ${params.label})`,
    );
  }
  if (hyper.f32.length < ADAMW_HYPER_WORDS) throw new TypeError(`${name}: hyper holds too few words`);
  if (length === 0) return;
  const aligned = vec4 && offset % 4 === 0 && [params, grads, m, v].every((t) => t.offset % 16 === 0);
  const vecCount = aligned ? Math.floor(length / 4) : 0;
  const dispatch = (vectorized: boolean, first: number, count: number) => {
    const bindings: Binding[] = [{ uniform: [first, count] }, hyper.binding(), params, m, v, grads];
    if (gradScale) bindings.push(gradScale);
    if (mask) bindings.push(mask);
    const decayMode = mask ? "mask" : decay === true;
    plan.dispatch(
      `adamw${vectorized ? "Vec4" : ""}${mask ? "Masked" : decay ? "" : "NoDecay"}${
        gradScale ? "Scaled" : ""
      }`,
      adamwWgsl({ vec4: vectorized, decay: decayMode, scaled: gradScale !== undefined }),
      bindings,
      grid1d(Math.ceil(count / (vectorized ? ADAMW_VEC4_PER_INVOCATION : 1)), OPTIMIZER_WORKGROUP),
    );
  };
  if (vecCount > 0) dispatch(true, offset / 4, vecCount);
  const rest = length - vecCount * 4;
  if (rest > 0) dispatch(false, offset + vecCount * 4, rest);
}

/**
 * One step of an exponential moving average of the weights, timm's `ModelEmaV3` update: ema ← ema + (1 − decay)·
 * (params − ema), elementwise over two tensors of one layout (typically whole parameter arenas). Elements equal
 * in both stay bit-identical, so frozen tensors never drift.
 *
 * @param ema f32, updated in place
 * @param params f32, the same size as `ema`
 * @param options.decay In [0, 1]: 0 takes `params` (to rounding), 1 leaves `ema` as it is. A number is fixed
 *   when the plan is recorded; a one-word {@link UniformBlock} holding 1 − decay (see {@link setEmaDecay}) can
 *   change before every submission.
 */
export function emaUpdate(
  plan: Plan,
  ema: Tensor,
  params: Tensor,
  { decay }: { decay: number | UniformBlock },
): void {
  if (params.size !== ema.size) {
    throw new TypeError(
      `emaUpdate: ${params.label} has ${params.size} elements, expected ${ema.size} like ${ema.label}`,
    );
  }
  if (typeof decay === "number" && !(decay >= 0 && decay <= 1)) {
    throw new RangeError(`emaUpdate: decay ${decay} is not in [0, 1]`);
  }
  const n = ema.size;
  if (n === 0) return;
  const rate: Binding = typeof decay === "number" ? { uniform: [{ f32: 1 - decay }] } : decay.binding();
  const aligned = ema.offset % 16 === 0 && params.offset % 16 === 0;
  const vecCount = aligned ? Math.floor(n / 4) : 0;
  const dispatch = (vectorized: boolean, first: number, count: number) => {
    plan.dispatch(
      `ema${vectorized ? "Vec4" : ""}`,
      emaWgsl({ vec4: vectorized }),
      [{ uniform: [first, count] }, rate, ema, params],
      grid1d(Math.ceil(count / (vectorized ? EMA_VEC4_PER_INVOCATION : 1)), OPTIMIZER_WORKGROUP),
    );
  };
  if (vecCount > 0) dispatch(true, 0, vecCount);
  if (n > vecCount * 4) dispatch(false, vecCount * 4, n - vecCount * 4);
}

/** Writes `decay` into a one-word block for {@link emaUpdate} (as 1 − decay, rounded once) and queues it. */
export function setEmaDecay(block: UniformBlock, decay: number): void {
  if (!(decay >= 0 && decay <= 1)) throw new RangeError(`setEmaDecay: decay ${decay} is not in [0, 1]`);
  block.f32[0] = 1 - decay;
  block.flush();
}

/**
 * The decay-mask bits of an arena's layout: bit b (word b >> 5, bit b & 31) is set when the tensor owning float block
 * b (of {@link DECAY_BLOCK} floats) decays. `decays(name, shape)` decides per tensor, e.g. {@link decaysLikeTimm}.
 */
export function decayMaskWords(
  arena: Arena,
  decays: (name: string, shape: readonly number[]) => boolean,
): Uint32Array {
  if (VIEW_ALIGNMENT / 4 !== DECAY_BLOCK) {
    throw new Error("decay mask blocks no longer match the arena alignment");
  }
  const words = new Uint32Array(Math.max(1, Math.ceil(arena.byteLength / 4 / DECAY_BLOCK / 32)));
  for (const name of arena.names()) {
    const t = arena.get(name);
    if (!decays(name, t.shape)) continue;
    const first = t.offset / 4 / DECAY_BLOCK;
    const end = Math.ceil((t.offset / 4 + t.size) / DECAY_BLOCK);
    for (let b = first; b < end; b++) words[b >>> 5] |= 1 << (b & 31);
  }
  return words;
}

/** Uploads {@link decayMaskWords} of an allocated arena as a u32 tensor for {@link adamwUpdate}'s `decay`. */
export function createDecayMask(
  gpu: Gpu,
  arena: Arena,
  decays: (name: string, shape: readonly number[]) => boolean,
): Tensor {
  const words = decayMaskWords(arena, decays);
  return uploadTensor(gpu, words, [words.length], `${arena.label}:decay-mask`);
}

/**
 * timm's rule (param_groups_weight_decay): no decay for 1-D tensors (biases, norm affines) and names ending in
 * ".bias"; everything else decays.
 */
export function decaysLikeTimm(name: string, shape: readonly number[]): boolean {
  return shape.length > 1 && !name.endsWith(".bias");
}
