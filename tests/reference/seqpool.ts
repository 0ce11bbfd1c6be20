/**
 * CPU float64 reference of sequence pooling. Flat row-major arrays: x [B, N, d], w [d], bias [1],
 * weights [B, N], pooled [B, d].
 */

/** Sizes of a sequence pooling. */
export interface SeqPoolSizes {
  batch: number;
  tokens: number;
  dim: number;
}

/** weights = softmax_n(x·w + bias); pooled = Σ_n weights·x. */
export function seqPoolForward(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array,
  { batch: B, tokens: N, dim: d }: SeqPoolSizes,
): { pooled: Float64Array; weights: Float64Array } {
  const weights = new Float64Array(B * N);
  const pooled = new Float64Array(B * d);
  for (let b = 0; b < B; b++) {
    let max = -Infinity;
    for (let n = 0; n < N; n++) {
      let logit = bias[0];
      for (let c = 0; c < d; c++) logit += x[(b * N + n) * d + c] * w[c];
      weights[b * N + n] = logit;
      max = Math.max(max, logit);
    }
    let sum = 0;
    for (let n = 0; n < N; n++) sum += weights[b * N + n] = Math.exp(weights[b * N + n] - max);
    for (let n = 0; n < N; n++) {
      weights[b * N + n] /= sum;
      for (let c = 0; c < d; c++) pooled[b * d + c] += weights[b * N + n] * x[(b * N + n) * d + c];
    }
  }
  return { pooled, weights };
}

/** dx = a·dpooled + dlogits·w; dw = Σ dlogits·x; dbias = Σ dlogits, with dlogits = a ⊙ (g − Σ a·g), g = dpooled·x. */
export function seqPoolBackward(
  dpooled: Float64Array,
  x: Float64Array,
  weights: Float64Array,
  w: Float64Array,
  { batch: B, tokens: N, dim: d }: SeqPoolSizes,
): { dx: Float64Array; dw: Float64Array; dbias: Float64Array } {
  const dx = new Float64Array(B * N * d);
  const dw = new Float64Array(d);
  const dbias = new Float64Array(1);
  for (let b = 0; b < B; b++) {
    const g = new Float64Array(N);
    let s = 0;
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < d; c++) g[n] += dpooled[b * d + c] * x[(b * N + n) * d + c];
      s += weights[b * N + n] * g[n];
    }
    for (let n = 0; n < N; n++) {
      const a = weights[b * N + n];
      const dlogit = a * (g[n] - s);
      dbias[0] += dlogit;
      for (let c = 0; c < d; c++) {
        const e = (b * N + n) * d + c;
        dx[e] = a * dpooled[b * d + c] + dlogit * w[c];
        dw[c] += dlogit * x[e];
      }
    }
  }
  return { dx, dw, dbias };
}
