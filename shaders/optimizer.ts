/**
 * Optimizer and gradient utilities: zero fill, the global gradient norm (two deterministic stages, no float
 * atomics), PyTorch's clip_grad_norm_ scale, and AdamW. Bandwidth-bound: runs of vec4s per invocation where the range
 * is 4-aligned, a scalar kernel for the ragged rest.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";

/** Invocations per workgroup of the optimizer kernels. */
export const OPTIMIZER_WORKGROUP = 64;
/*
 * Consecutive vec4s per invocation. On llvmpipe a lane walking its own contiguous run beats one vec4 per lane
 * (fewer workgroups, streaming access); measured over 3.76 M floats (best of interleaved runs on a loaded machine):
 * zero 4.7 → 6.6 GB/s, AdamW 2.5 → 3.8 GB/s, Σg² 1.3 (a 4096-lane strided loop) → 9 GB/s.
 */
/** Consecutive vec4s zeroed per invocation. */
export const ZERO_VEC4_PER_INVOCATION = 16;
/** Consecutive vec4s updated per AdamW invocation. */
export const ADAMW_VEC4_PER_INVOCATION = 4;
/** Consecutive vec4s summed per invocation of the first grad-norm stage. */
export const NORM_VEC4_PER_INVOCATION = 256;
/** Largest number of partial sums of the first grad-norm stage: 32 M floats (one full storage binding) / 1024. */
export const NORM_MAX_PARTIALS = 32768;

/**
 * Floats per bit of an AdamW decay mask: an Arena aligns every tensor to 256 bytes, so each 64-float block belongs
 * to one tensor and one bit per block says whether that tensor decays.
 */
export const DECAY_BLOCK = 64;

/** Words of the AdamW hyperparameter uniform (see {@link ADAMW_HYPER_WGSL} for the layout). */
export const ADAMW_HYPER_WORDS = 12;

/**
 * The AdamW hyperparameters as the host writes them: every derived scalar is computed in float64 on the host and
 * rounded once to f32, as PyTorch does with its Python-float scalars.
 */
export const ADAMW_HYPER_WGSL = /* wgsl */ `
struct AdamwHyper {
  lr: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  weight_decay: f32,
  one_minus_beta1: f32,
  one_minus_beta2: f32,
  decay_factor: f32,           // 1 − lr·wd
  step_size: f32,              // lr / (1 − β1^t)
  bias_correction2_sqrt: f32,  // sqrt(1 − β2^t)
  step: f32,
  unused: f32,
}
`;

/** Fills `count` vec4s with zero, {@link ZERO_VEC4_PER_INVOCATION} consecutive ones per invocation.
 * Bindings: sizes {count}, out. */
export function zeroWgsl(): string {
  const wg = OPTIMIZER_WORKGROUP, per = ZERO_VEC4_PER_INVOCATION;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
struct Sizes { count: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let start = linear_index(gid, nwg) * ${per}u;
  let end = min(start + ${per}u, sizes.count);
  for (var i = start; i < end; i++) { out[i] = vec4<f32>(0.0); }
}
`;
}

/**
 * Stage 1 of Σ g²: invocation i sums vec4s [i·R, (i+1)·R) (R = {@link NORM_VEC4_PER_INVOCATION}) into
 * partials[i]; invocation 0 also adds the ragged tail (elements 4·vec_count … n−1). Bindings: sizes {vec_count, n,
 * partials}, partials, grads as vec4, grads as f32 (the same memory, read-only twice).
 */
export function gradNormPartialsWgsl(): string {
  const wg = OPTIMIZER_WORKGROUP, per = NORM_VEC4_PER_INVOCATION;
  return /* wgsl */ `
struct Sizes { vec_count: u32, n: u32, partials: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<storage, read> grads4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> grads: array<f32>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= sizes.partials) { return; }
  var acc = vec4<f32>(0.0);
  let end = min((i + 1u) * ${per}u, sizes.vec_count);
  for (var k = i * ${per}u; k < end; k++) {
    let g = grads4[k];
    acc += g * g;
  }
  var s = (acc.x + acc.y) + (acc.z + acc.w);
  if (i == 0u) {
    for (var j = sizes.vec_count * 4u; j < sizes.n; j++) { s += grads[j] * grads[j]; }
  }
  partials[i] = s;
}
`;
}

/**
 * Stage 2: out[0] = Σ partials in a fixed order: each of 64 lanes sums a contiguous run, lane 0 adds the 64 runs
 * (one barrier). Bindings: sizes {partials}, out, partials.
 */
export function gradNormFinishWgsl(): string {
  const wg = OPTIMIZER_WORKGROUP;
  return /* wgsl */ `
struct Sizes { partials: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> partials: array<f32>;
var<workgroup> runs: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(local_invocation_index) lane: u32) {
  let per = (sizes.partials + ${wg - 1}u) / ${wg}u;
  let end = min((lane + 1u) * per, sizes.partials);
  var s = 0.0;
  for (var k = lane * per; k < end; k++) { s += partials[k]; }
  runs[lane] = s;
  workgroupBarrier();
  if (lane == 0u) {
    var total = 0.0;
    for (var i = 0u; i < ${wg}u; i++) { total += runs[i]; }
    out[0] = total;
  }
}
`;
}

/** scale[0] = min(1, max_norm / (sqrt(norm_squared[0]) + 1e-6)): clip_grad_norm_'s factor. */
export function clipScaleWgsl(): string {
  return /* wgsl */ `
struct Sizes { max_norm: f32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> scale: array<f32>;
@group(0) @binding(2) var<storage, read> norm_squared: array<f32>;
@compute @workgroup_size(1)
fn main() {
  scale[0] = min(1.0, sizes.max_norm / (sqrt(norm_squared[0]) + 1e-6));
}
`;
}

/**
 * One AdamW step over elements [first, first + count) (in units of vec4 when `vec4`), in PyTorch 1.13's order of
 * f32 operations: g = grad·scale; p = p·(1 − lr·wd); m = fma(g, 1−β1, m·β1); v = fma((1−β2)·g, g, v·β2);
 * p = p + (−step_size·m) / (sqrt(v) / sqrt(1−β2^t) + eps).
 * `decay: "mask"` reads bit b of `decay_mask` (one bit per {@link DECAY_BLOCK}-float block b of the arena) to decide
 * per block. Bindings: sizes {first, count}, hyper, params, m, v, grads[, grad_scale][, decay_mask].
 */
export function adamwWgsl(
  options: { vec4: boolean; decay: boolean | "mask"; scaled: boolean },
): string {
  const wg = OPTIMIZER_WORKGROUP;
  const maskDecl = options.decay === "mask"
    ? `@group(0) @binding(${options.scaled ? 7 : 6}) var<storage, read> decay_mask: array<u32>;`
    : "";
  const oneMinusBeta1 = options.vec4 ? "vec4<f32>(hyper.one_minus_beta1)" : "hyper.one_minus_beta1";
  const elementsPerIndex = options.vec4 ? 4 : 1;
  const decayCode = options.decay === "mask"
    ? /* wgsl */ `let block = (k * ${elementsPerIndex}u) / ${DECAY_BLOCK}u;
    if (((decay_mask[block >> 5u] >> (block & 31u)) & 1u) == 1u) { p = p * hyper.decay_factor; }`
    : options.decay
    ? "p = p * hyper.decay_factor;"
    : "";
  const t = options.vec4 ? "vec4<f32>" : "f32";
  const per = options.vec4 ? ADAMW_VEC4_PER_INVOCATION : 1;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
${ADAMW_HYPER_WGSL}
struct Sizes { first: u32, count: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<uniform> hyper: AdamwHyper;
@group(0) @binding(2) var<storage, read_write> params: array<${t}>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<${t}>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<${t}>;
@group(0) @binding(5) var<storage, read> grads: array<${t}>;
${options.scaled ? "@group(0) @binding(6) var<storage, read> grad_scale: array<f32>;" : ""}
${maskDecl}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let start = linear_index(gid, nwg) * ${per}u;
  let end = min(start + ${per}u, sizes.count);
  for (var i = start; i < end; i++) {
    let k = sizes.first + i;
    let g = grads[k]${options.scaled ? " * grad_scale[0]" : ""};
    var p = params[k];
    ${decayCode}
    // fma where PyTorch's CPU kernels fuse (add_ with alpha is fmadd(g, α, m); addcmul_ is contracted): a true fma
    // is bit-identical to PyTorch 1.13 on the fixture; llvmpipe computes it as multiply + add (≤ 1 ulp apart).
    let m = fma(g, ${oneMinusBeta1}, exp_avg[k] * hyper.beta1);
    let v = fma(hyper.one_minus_beta2 * g, g, exp_avg_sq[k] * hyper.beta2);
    let denom = sqrt(v) / hyper.bias_correction2_sqrt + hyper.eps;
    params[k] = p + (-hyper.step_size * m) / denom;
    exp_avg[k] = m;
    exp_avg_sq[k] = v;
  }
}
`;
}

/** Consecutive vec4s averaged per invocation of the weight EMA. */
export const EMA_VEC4_PER_INVOCATION = 4;

/**
 * One step of an exponential moving average of the weights: ema += rate·(params − ema), rate = 1 − decay, over
 * `count` elements (vec4s when `vec4`) from `first`. Written as a lerp (timm's `ema.lerp_(p, 1 − decay)`), so an
 * element equal in both stays bit-identical however many steps run. The rate has its own uniform so that a
 * recorded step can change it every step (the decay's warm-up). Bindings: sizes {first, count}, rate, ema, params.
 */
export function emaWgsl(options: { vec4: boolean }): string {
  const wg = OPTIMIZER_WORKGROUP;
  const t = options.vec4 ? "vec4<f32>" : "f32";
  const per = options.vec4 ? EMA_VEC4_PER_INVOCATION : 1;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
struct Sizes { first: u32, count: u32 }
struct Rate { rate: f32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<uniform> rate: Rate;
@group(0) @binding(2) var<storage, read_write> ema: array<${t}>;
@group(0) @binding(3) var<storage, read> params: array<${t}>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let start = linear_index(gid, nwg) * ${per}u;
  let end = min(start + ${per}u, sizes.count);
  for (var i = start; i < end; i++) {
    let k = sizes.first + i;
    let e = ema[k];
    ema[k] = e + rate.rate * (params[k] - e);
  }
}
`;
}
