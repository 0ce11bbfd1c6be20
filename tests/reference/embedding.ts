/** CPU float64 reference of the token-level ops. Token tensors are [batch, tokens, dim], flat row-major. */

/** y[b, n, :] = x[b, n, :] + pe[n, :]. */
export function positionalEmbeddingAdd(
  x: Float64Array,
  pe: Float64Array,
  batch: number,
  tokens: number,
  dim: number,
) {
  const y = new Float64Array(batch * tokens * dim);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < tokens * dim; i++) y[b * tokens * dim + i] = x[b * tokens * dim + i] + pe[i];
  }
  return y;
}

/** dpe = Σ_b dy[b] → [tokens, dim] (dx is dy itself). */
export function positionalEmbeddingBackward(dy: Float64Array, batch: number, tokens: number, dim: number) {
  const dpe = new Float64Array(tokens * dim);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < tokens * dim; i++) dpe[i] += dy[b * tokens * dim + i];
  }
  return dpe;
}

/** [batch, tokens, dim] → [batch, tokens + 1, dim] with the class token at index 0. */
export function classTokenConcat(
  x: Float64Array,
  cls: Float64Array,
  batch: number,
  tokens: number,
  dim: number,
) {
  const y = new Float64Array(batch * (tokens + 1) * dim);
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < dim; c++) y[b * (tokens + 1) * dim + c] = cls[c];
    for (let i = 0; i < tokens * dim; i++) y[(b * (tokens + 1) + 1) * dim + i] = x[b * tokens * dim + i];
  }
  return y;
}

/** dx [batch, tokens, dim] = dy[:, 1:, :]; dcls [dim] = Σ_b dy[b, 0, :]. */
export function classTokenBackward(dy: Float64Array, batch: number, tokens: number, dim: number) {
  const dx = new Float64Array(batch * tokens * dim);
  const dcls = new Float64Array(dim);
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < dim; c++) dcls[c] += dy[b * (tokens + 1) * dim + c];
    for (let i = 0; i < tokens * dim; i++) dx[b * tokens * dim + i] = dy[(b * (tokens + 1) + 1) * dim + i];
  }
  return { dx, dcls };
}

/** y [batch, dim] = x[:, index, :]. */
export function selectToken(x: Float64Array, batch: number, tokens: number, dim: number, index: number) {
  const y = new Float64Array(batch * dim);
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < dim; c++) y[b * dim + c] = x[(b * tokens + index) * dim + c];
  }
  return y;
}

/** dx [batch, tokens, dim]: dy at `index`, zeros elsewhere. */
export function selectTokenBackward(
  dy: Float64Array,
  batch: number,
  tokens: number,
  dim: number,
  index: number,
) {
  const dx = new Float64Array(batch * tokens * dim);
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < dim; c++) dx[(b * tokens + index) * dim + c] = dy[b * dim + c];
  }
  return dx;
}
