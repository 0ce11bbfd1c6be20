/** CPU references of the optimizer kernels: float64 formulas, and AdamW in PyTorch's f32 operation order. */

/** AdamW hyperparameters of one step (`step` is 1-based). */
export interface AdamwHyperReference {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

/** State of AdamW over a flat parameter vector; arrays are updated in place. */
export interface AdamwState {
  params: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

/**
 * One AdamW step in float64 (PyTorch's formula): p *= 1 − lr·wd (when `decay`); m = β1·m + (1−β1)·g;
 * v = β2·v + (1−β2)·g²; p −= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps), g = grad·gradScale.
 */
export function adamwStep(
  state: AdamwState,
  grads: ArrayLike<number>,
  h: AdamwHyperReference,
  { decay = true, gradScale = 1 }: { decay?: boolean; gradScale?: number } = {},
): void {
  const bc1 = 1 - h.beta1 ** h.step, bc2 = 1 - h.beta2 ** h.step;
  for (let i = 0; i < state.params.length; i++) {
    const g = grads[i] * gradScale;
    let p = state.params[i];
    if (decay) p *= 1 - h.lr * h.weightDecay;
    const m = h.beta1 * state.m[i] + (1 - h.beta1) * g;
    const v = h.beta2 * state.v[i] + (1 - h.beta2) * g * g;
    state.params[i] = p - (h.lr / bc1) * m / (Math.sqrt(v) / Math.sqrt(bc2) + h.eps);
    state.m[i] = m;
    state.v[i] = v;
  }
}

/**
 * The same step rounded to float32 after every operation, in the order PyTorch 1.13's CPU kernels use
 * (mul_, add_(alpha) as fmadd, addcmul_ contracted to an fma, sqrt, div, add_, addcdiv_), with Python scalars
 * rounded once from float64. Bit-identical to PyTorch on the cct_2_3x2_32 fixture's two steps.
 */
export function adamwStepF32(
  state: AdamwState,
  grads: ArrayLike<number>,
  h: AdamwHyperReference,
  { decay = true, gradScale = 1 }: { decay?: boolean; gradScale?: number } = {},
): void {
  const f = Math.fround;
  const beta1 = f(h.beta1), beta2 = f(h.beta2), eps = f(h.eps);
  const oneMinusBeta1 = f(1 - h.beta1), oneMinusBeta2 = f(1 - h.beta2);
  const decayFactor = f(1 - h.lr * h.weightDecay);
  const stepSize = f(h.lr / (1 - h.beta1 ** h.step));
  const bc2Sqrt = f(Math.sqrt(1 - h.beta2 ** h.step));
  const scale = f(gradScale);
  for (let i = 0; i < state.params.length; i++) {
    const g = gradScale === 1 ? f(grads[i]) : f(f(grads[i]) * scale);
    let p = f(state.params[i]);
    if (decay) p = f(p * decayFactor);
    const m = fmaF32(g, oneMinusBeta1, f(state.m[i] * beta1));
    const v = fmaF32(f(oneMinusBeta2 * g), g, f(state.v[i] * beta2));
    const denom = f(f(f(Math.sqrt(v)) / bc2Sqrt) + eps);
    state.params[i] = f(p + f(f(-stepSize * m) / denom));
    state.m[i] = m;
    state.v[i] = v;
  }
}

const f32Bits = new Float32Array(1);
const i32Bits = new Int32Array(f32Bits.buffer);

/** The float32 next to `x` (a float32) towards `direction`'s sign. */
function nextF32(x: number, direction: number): number {
  if (x === 0) return Math.sign(direction) * 1.401298464324817e-45;
  f32Bits[0] = x;
  i32Bits[0] += (x > 0) === (direction > 0) ? 1 : -1;
  return f32Bits[0];
}

/** fma(a, b, c) rounded once to float32, for float32 a, b, c (a·b is exact in float64; ties fixed with TwoSum). */
export function fmaF32(a: number, b: number, c: number): number {
  const product = a * b;
  const sum = product + c;
  const virtualB = sum - product;
  const error = (product - (sum - virtualB)) + (c - virtualB); // product + c = sum + error exactly
  const rounded = Math.fround(sum);
  if (error === 0 || rounded === sum) return rounded;
  // Double rounding only matters when `sum` sits exactly halfway between two float32s.
  const other = nextF32(rounded, sum - rounded);
  if (Math.abs(other - sum) !== Math.abs(rounded - sum)) return rounded;
  return Math.sign(error) === Math.sign(other - rounded) ? other : rounded;
}

/** Σ g². */
export function gradNormSquared(grads: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < grads.length; i++) s += grads[i] * grads[i];
  return s;
}

/** min(1, maxNorm / (sqrt(normSquared) + 1e-6)): clip_grad_norm_'s factor. */
export function clipScale(normSquared: number, maxNorm: number): number {
  return Math.min(1, maxNorm / (Math.sqrt(normSquared) + 1e-6));
}

/** One step of the weights' moving average, in place: ema = decay·ema + (1 − decay)·params. */
export function emaStep(ema: Float64Array, params: ArrayLike<number>, decay: number): void {
  for (let i = 0; i < ema.length; i++) ema[i] = decay * ema[i] + (1 - decay) * params[i];
}
