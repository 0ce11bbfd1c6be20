/**
 * CPU float64 reference of dropout and drop-path. The masks come from `lib/gpu/random.ts`, bit-identical to the
 * GPU's, so reference and kernel drop exactly the same elements.
 */
import { randomUniform } from "../../lib/gpu/random.ts";

/** The scale of kept values, rounded to float32 as the kernels receive it. */
export function keepScale(p: number): number {
  return p < 1 ? Math.fround(1 / (1 - p)) : 0;
}

/** Dropout mask times scale per flat element index: 0 or 1/(1 − p). */
export function dropoutMask(n: number, p: number, seed: number): Float64Array {
  const m = new Float64Array(n), scale = keepScale(p), pf = Math.fround(p);
  for (let i = 0; i < n; i++) m[i] = randomUniform(seed, i) >= pf ? scale : 0;
  return m;
}

/** y = x·mask/(1 − p). */
export function dropoutForward(x: Float64Array, p: number, seed: number): Float64Array {
  const m = dropoutMask(x.length, p, seed);
  return x.map((v, i) => v * m[i]);
}

/** dx = dy·mask/(1 − p) (the same mask as the forward). */
export function dropoutBackward(dy: Float64Array, p: number, seed: number): Float64Array {
  return dropoutForward(dy, p, seed);
}

/** Drop-path factor per sample: 0 or 1/(1 − p) (1 when p = 0). */
export function dropPathMask(batch: number, p: number, seed: number): Float64Array {
  const m = new Float64Array(batch), scale = keepScale(p), pf = Math.fround(p);
  for (let b = 0; b < batch; b++) m[b] = p === 0 ? 1 : randomUniform(seed, b) >= pf ? scale : 0;
  return m;
}

/** out = residual + branch·mask[b]/(1 − p); arrays [batch, perSample]. */
export function residualDropPath(
  residual: Float64Array,
  branch: Float64Array,
  batch: number,
  p: number,
  seed: number,
): Float64Array {
  const m = dropPathMask(batch, p, seed), per = residual.length / batch;
  return residual.map((v, i) => v + branch[i] * m[Math.floor(i / per)]);
}

/** dresidual = dout, dbranch = dout·mask[b]/(1 − p). */
export function residualDropPathBackward(dout: Float64Array, batch: number, p: number, seed: number) {
  const m = dropPathMask(batch, p, seed), per = dout.length / batch;
  return { dresidual: dout.slice(), dbranch: dout.map((v, i) => v * m[Math.floor(i / per)]) };
}
