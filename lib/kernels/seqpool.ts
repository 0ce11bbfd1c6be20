/**
 * Typed wrappers of sequence pooling (`shaders/seqpool.ts`), the CCT/CVT head:
 * x [B, N, d], w [1, d] (`attention_pool.weight`), bias [1] → pooled [B, d], saving the softmax weights [B, N].
 */
import { grid1d, type Plan } from "../gpu/plan.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import {
  SEQPOOL_WORKGROUP,
  seqPoolInputGradsWgsl,
  seqPoolLogitGradsWgsl,
  seqPoolLogitsWgsl,
  seqPoolParamGradsWgsl,
  seqPoolPoolWgsl,
  seqPoolSoftmaxWgsl,
  seqPoolWeightGradsWgsl,
} from "../../shaders/seqpool.ts";

/** Sizes of a sequence pooling. */
export interface SeqPoolOptions {
  batch: number;
  tokens: number;
  dim: number;
}

/** Options of {@link seqPoolBackward}. */
export interface SeqPoolBackwardOptions extends SeqPoolOptions {
  /** Add into dx (e.g. a gradient already holding other contributions) instead of overwriting it. */
  accumulateDx?: boolean;
  /** Scratch [B, N] for the logit gradients; allocated once when the call is recorded if absent. */
  scratch?: Tensor;
}

function check(kernel: string, plan: Plan, o: SeqPoolOptions, tensors: [Tensor, string, number[]][]): void {
  for (const [name, v] of Object.entries({ batch: o.batch, tokens: o.tokens, dim: o.dim })) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`${kernel}: ${name} must be a positive integer, got ${v}`);
    }
  }
  const limit = plan.gpu.device.limits.maxStorageBufferBindingSize;
  for (const [t, name, shape] of tensors) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (t.size !== size) {
      throw new TypeError(`${kernel}: ${name} (${t.label}) has shape [${t.shape}], expected [${shape}]`);
    }
    if (t.byteLength > limit) {
      throw new RangeError(
        `${kernel}: ${name} (${t.byteLength} B) exceeds the storage binding limit ${limit} B`,
      );
    }
  }
}

/**
 * Forward: weights = softmax_n(x·wᵀ + bias) [B, N] (saved for backward), pooled = Σ_n weights[b, n]·x[b, n, :].
 * Shapes: pooled [B, d], weights [B, N], x [B, N, d], w [1, d], bias [1]. Three dispatches.
 */
export function seqPoolForward(
  plan: Plan,
  pooled: Tensor,
  weights: Tensor,
  x: Tensor,
  w: Tensor,
  bias: Tensor,
  options: SeqPoolOptions,
): void {
  const { batch: B, tokens: N, dim: d } = options;
  check("seqPoolForward", plan, options, [
    [pooled, "pooled", [B, d]],
    [weights, "weights", [B, N]],
    [x, "x", [B, N, d]],
    [w, "w", [1, d]],
    [bias, "bias", [1]],
  ]);
  const sizes = { uniform: [B, N, d] };
  plan.dispatch(
    "seqPoolLogits",
    seqPoolLogitsWgsl(),
    [sizes, weights, x, w, bias],
    grid1d(B * N, SEQPOOL_WORKGROUP),
  );
  plan.dispatch("seqPoolSoftmax", seqPoolSoftmaxWgsl(), [sizes, weights], grid1d(B, SEQPOOL_WORKGROUP));
  plan.dispatch(
    "seqPoolPool",
    seqPoolPoolWgsl(),
    [sizes, pooled, weights, x],
    grid1d(B * d, SEQPOOL_WORKGROUP),
  );
}

/**
 * Backward: with g[b, n] = dpooled[b]·x[b, n] and dlogits = a ⊙ (g − Σ_n a·g),
 * dx = a·dpooled + dlogits·w (overwritten, or added when `accumulateDx`); dw += Σ dlogits·x; dbias += Σ dlogits
 * (parameter gradients always ACCUMULATE). Shapes: dx [B, N, d], dw [1, d], dbias [1], dpooled [B, d],
 * x [B, N, d], weights [B, N], w [1, d]. Four dispatches.
 */
export function seqPoolBackward(
  plan: Plan,
  dx: Tensor,
  dw: Tensor,
  dbias: Tensor,
  dpooled: Tensor,
  x: Tensor,
  weights: Tensor,
  w: Tensor,
  options: SeqPoolBackwardOptions,
): void {
  const { batch: B, tokens: N, dim: d } = options;
  const tensors: [Tensor, string, number[]][] = [
    [dx, "dx", [B, N, d]],
    [dw, "dw", [1, d]],
    [dbias, "dbias", [1]],
    [dpooled, "dpooled", [B, d]],
    [x, "x", [B, N, d]],
    [weights, "weights", [B, N]],
    [w, "w", [1, d]],
  ];
  if (options.scratch) tensors.push([options.scratch, "scratch", [B, N]]);
  check("seqPoolBackward", plan, options, tensors);
  const g = options.scratch ?? createTensor(plan.gpu, [B, N], "seqPool logit grads");
  const sizes = { uniform: [B, N, d] };
  plan.dispatch(
    "seqPoolWeightGrads",
    seqPoolWeightGradsWgsl(),
    [sizes, g, dpooled, x],
    grid1d(B * N, SEQPOOL_WORKGROUP),
  );
  plan.dispatch(
    "seqPoolLogitGrads",
    seqPoolLogitGradsWgsl(),
    [sizes, g, weights],
    grid1d(B, SEQPOOL_WORKGROUP),
  );
  plan.dispatch(
    "seqPoolInputGrads",
    seqPoolInputGradsWgsl(options.accumulateDx ?? false),
    [sizes, dx, weights, dpooled, g, w],
    grid1d(B * d, SEQPOOL_WORKGROUP),
  );
  plan.dispatch(
    "seqPoolParamGrads",
    seqPoolParamGradsWgsl(),
    [sizes, dw, dbias, g, x],
    grid1d(d + 1, SEQPOOL_WORKGROUP),
  );
}
