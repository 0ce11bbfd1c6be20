/** CPU float64 reference of LayerNorm over the last dimension. x, y, dx, dy: [rows, dim]; mean, rstd: [rows]. */

/** y = (x − mean)·rstd·γ + β with rstd = 1/√(biased var + eps); also returns mean and rstd. */
export function layerNormForward(
  x: Float64Array,
  gamma: Float64Array,
  beta: Float64Array,
  rows: number,
  dim: number,
  eps = 1e-5,
): { y: Float64Array; mean: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(rows * dim);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += x[r * dim + j];
    const m = s / dim;
    let q = 0;
    for (let j = 0; j < dim; j++) q += (x[r * dim + j] - m) ** 2;
    const rs = 1 / Math.sqrt(q / dim + eps);
    for (let j = 0; j < dim; j++) y[r * dim + j] = (x[r * dim + j] - m) * rs * gamma[j] + beta[j];
    mean[r] = m;
    rstd[r] = rs;
  }
  return { y, mean, rstd };
}

/** Gradients of Σ y·dy w.r.t. x, γ and β (dγ, dβ as plain sums, not accumulated). */
export function layerNormBackward(
  dy: Float64Array,
  x: Float64Array,
  gamma: Float64Array,
  rows: number,
  dim: number,
  eps = 1e-5,
): { dx: Float64Array; dgamma: Float64Array; dbeta: Float64Array } {
  const { mean, rstd } = layerNormForward(x, gamma, new Float64Array(dim), rows, dim, eps);
  const dx = new Float64Array(rows * dim);
  const dgamma = new Float64Array(dim);
  const dbeta = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const m = mean[r], rs = rstd[r];
    let a = 0, b = 0;
    for (let j = 0; j < dim; j++) {
      const g = dy[r * dim + j] * gamma[j];
      const xh = (x[r * dim + j] - m) * rs;
      a += g;
      b += g * xh;
      dgamma[j] += dy[r * dim + j] * xh;
      dbeta[j] += dy[r * dim + j];
    }
    a /= dim;
    b /= dim;
    for (let j = 0; j < dim; j++) {
      const xh = (x[r * dim + j] - m) * rs;
      dx[r * dim + j] = rs * (dy[r * dim + j] * gamma[j] - a - xh * b);
    }
  }
  return { dx, dgamma, dbeta };
}
