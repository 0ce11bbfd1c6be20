/** CPU float64 reference of the loss kernels. Shapes: logits [B, C]; labels [B] (int) or soft targets [B, C]. */

/** Options shared by the cross-entropy reference functions. */
export interface CrossEntropyReferenceOptions {
  batch: number;
  classes: number;
  smoothing?: number;
  soft?: boolean;
  gradScale?: number;
}

/** The smoothed target row t' = (1−ε)·t + ε/C, or null for a hard label outside [0, C) (an ignored row). */
function targetRow(
  targets: ArrayLike<number>,
  b: number,
  o: Required<CrossEntropyReferenceOptions>,
): number[] | null {
  const { classes: C, smoothing: eps, soft } = o;
  const t = new Array<number>(C);
  if (soft) {
    for (let c = 0; c < C; c++) t[c] = (1 - eps) * targets[b * C + c] + eps / C;
    return t;
  }
  const label = targets[b];
  if (!(label >= 0 && label < C)) return null;
  for (let c = 0; c < C; c++) t[c] = (c === label ? 1 - eps : 0) + eps / C;
  return t;
}

function withDefaults(o: CrossEntropyReferenceOptions): Required<CrossEntropyReferenceOptions> {
  return { smoothing: 0, soft: false, gradScale: 1 / o.batch, ...o };
}

/**
 * losses[b] = −Σ_c t'_c·log softmax(x_b)_c; dlogits [B, C] = (softmax·Σt' − t')·gradScale. Ignored rows (hard label
 * outside [0, C)) have loss 0 and zero gradient.
 */
export function crossEntropyForwardBackward(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  options: CrossEntropyReferenceOptions,
): { losses: Float64Array; dlogits: Float64Array } {
  const o = withDefaults(options);
  const { batch: B, classes: C } = o;
  const losses = new Float64Array(B);
  const dlogits = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    const t = targetRow(targets, b, o);
    if (t === null) continue;
    let mx = -Infinity;
    for (let c = 0; c < C; c++) mx = Math.max(mx, logits[b * C + c]);
    let sum = 0;
    for (let c = 0; c < C; c++) sum += Math.exp(logits[b * C + c] - mx);
    const logSum = Math.log(sum);
    let loss = 0, total = 0;
    for (let c = 0; c < C; c++) {
      loss -= t[c] * (logits[b * C + c] - mx - logSum);
      total += t[c];
    }
    losses[b] = loss;
    for (let c = 0; c < C; c++) {
      const p = Math.exp(logits[b * C + c] - mx) / sum;
      dlogits[b * C + c] = (p * total - t[c]) * o.gradScale;
    }
  }
  return { losses, dlogits };
}

/** Σ_b losses[b]·gradScale: the scalar whose gradient w.r.t. logits is `dlogits` (for finite differences). */
export function crossEntropyScaledLoss(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  options: CrossEntropyReferenceOptions,
): number {
  const o = withDefaults(options);
  const { losses } = crossEntropyForwardBackward(logits, targets, o);
  return losses.reduce((s, l) => s + l, 0) * o.gradScale;
}

/** First index of the largest value of row b. */
function argmaxRow(x: ArrayLike<number>, b: number, C: number): number {
  let best = 0;
  for (let c = 1; c < C; c++) if (x[b * C + c] > x[b * C + best]) best = c;
  return best;
}

/**
 * metrics + [Σ losses, #(argmax logits == label), #counted]; hard labels outside [0, C) are not counted, soft
 * targets use the argmax of the target row.
 */
export function accumulateMetrics(
  metrics: ArrayLike<number>,
  losses: ArrayLike<number>,
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  { batch: B, classes: C, soft = false }: { batch: number; classes: number; soft?: boolean },
): Float64Array {
  const out = Float64Array.from(metrics);
  for (let b = 0; b < B; b++) {
    out[0] += losses[b];
    const label = soft ? argmaxRow(labels, b, C) : labels[b];
    if (!(label >= 0 && label < C)) continue;
    out[2] += 1;
    if (argmaxRow(logits, b, C) === label) out[1] += 1;
  }
  return out;
}
