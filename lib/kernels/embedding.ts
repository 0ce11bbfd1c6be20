/**
 * Typed wrappers of the token-level kernels (`shaders/embedding.ts`): positional embedding, class token, token
 * selection. Arguments: outputs, inputs, weights, sizes. Gradients of parameters (dpe, dcls) are ACCUMULATED.
 */
import { grid1d, type Plan } from "../gpu/plan.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  classTokenBackwardWgsl,
  classTokenConcatWgsl,
  EMBEDDING_WORKGROUP,
  embeddingWidth,
  POSITIONAL_BACKWARD_BLOCK,
  positionalEmbeddingAddWgsl,
  positionalEmbeddingBackwardWgsl,
  selectTokenBackwardWgsl,
  selectTokenWgsl,
} from "../../shaders/embedding.ts";
import { expectElements } from "./_check.ts";

/** Sizes of a token tensor [batch, tokens, dim]. */
export interface TokenSizes {
  /** Samples. */
  batch: number;
  /** Tokens per sample (of the input, before a class token is prepended). */
  tokens: number;
  /** Features per token. */
  dim: number;
}

function check(kernel: string, { batch, tokens, dim }: TokenSizes, minTokens = 0): void {
  for (
    const [name, v, min] of [["batch", batch, 0], ["tokens", tokens, minTokens], ["dim", dim, 1]] as const
  ) {
    if (!Number.isInteger(v) || v < min) {
      throw new RangeError(
        `${kernel}: ${name} must be an integer ≥ ${min}, got ${v}`,
      );
    }
  }
}

/** True when two tensors are the same memory (an in-place call). */
export function sameView(a: Tensor, b: Tensor): boolean {
  return a.buffer === b.buffer && a.offset === b.offset && a.size === b.size;
}

/** y[b, n, :] = x[b, n, :] + pe[n, :]. y may be x (in place). Shapes: y, x [batch, tokens, dim]; pe [tokens, dim]. */
export function positionalEmbeddingAdd(
  plan: Plan,
  y: Tensor,
  x: Tensor,
  pe: Tensor,
  sizes: TokenSizes,
): void {
  const k = "positionalEmbeddingAdd";
  check(k, sizes);
  const { batch, tokens, dim } = sizes;
  expectElements(k, y, batch * tokens * dim, "batch·tokens·dim");
  expectElements(k, x, batch * tokens * dim, "batch·tokens·dim");
  expectElements(k, pe, tokens * dim, "tokens·dim");
  const period = tokens * (dim / embeddingWidth(dim));
  const inPlace = sameView(y, x);
  plan.dispatch(
    k,
    positionalEmbeddingAddWgsl(dim, inPlace),
    inPlace ? [{ uniform: [period] }, y, pe] : [{ uniform: [period] }, y, x, pe],
    [Math.ceil(period / EMBEDDING_WORKGROUP), batch],
  );
}

/** dpe[n, :] += Σ_b dy[b, n, :]. Shapes: dpe [tokens, dim]; dy [batch, tokens, dim]. */
export function positionalEmbeddingBackward(plan: Plan, dpe: Tensor, dy: Tensor, sizes: TokenSizes): void {
  const k = "positionalEmbeddingBackward";
  check(k, sizes);
  const { batch, tokens, dim } = sizes;
  expectElements(k, dpe, tokens * dim, "tokens·dim");
  expectElements(k, dy, batch * tokens * dim, "batch·tokens·dim");
  const period = tokens * (dim / embeddingWidth(dim));
  const q = Math.ceil(period / POSITIONAL_BACKWARD_BLOCK);
  plan.dispatch(
    k,
    positionalEmbeddingBackwardWgsl(dim),
    [{ uniform: [batch, period, q] }, dpe, dy],
    grid1d(q, EMBEDDING_WORKGROUP),
  );
}

/**
 * Prepends the class token: y[b, 0, :] = cls, y[b, 1 + n, :] = x[b, n, :]. Shapes: y [batch, tokens + 1, dim];
 * x [batch, tokens, dim]; cls [dim]. `tokens` counts the tokens of x.
 */
export function classTokenConcat(plan: Plan, y: Tensor, x: Tensor, cls: Tensor, sizes: TokenSizes): void {
  const k = "classTokenConcat";
  check(k, sizes);
  const { batch, tokens, dim } = sizes;
  expectElements(k, y, batch * (tokens + 1) * dim, "batch·(tokens + 1)·dim");
  expectElements(k, x, batch * tokens * dim, "batch·tokens·dim");
  expectElements(k, cls, dim, "dim");
  const n = batch * (tokens + 1) * (dim / embeddingWidth(dim));
  plan.dispatch(
    k,
    classTokenConcatWgsl(dim),
    [{ uniform: [batch, tokens] }, y, x, cls],
    grid1d(n, EMBEDDING_WORKGROUP),
  );
}

/**
 * Backward of {@link classTokenConcat}: dx = dy[:, 1:, :] (added when `accumulateDx`), dcls += Σ_b dy[b, 0, :].
 * Shapes as in the forward. One dispatch.
 */
export function classTokenBackward(
  plan: Plan,
  dx: Tensor,
  dcls: Tensor,
  dy: Tensor,
  sizes: TokenSizes & { accumulateDx?: boolean },
): void {
  const k = "classTokenBackward";
  check(k, sizes);
  const { batch, tokens, dim, accumulateDx = false } = sizes;
  expectElements(k, dx, batch * tokens * dim, "batch·tokens·dim");
  expectElements(k, dcls, dim, "dim");
  expectElements(k, dy, batch * (tokens + 1) * dim, "batch·(tokens + 1)·dim");
  const w = dim / embeddingWidth(dim);
  plan.dispatch(
    k,
    classTokenBackwardWgsl(dim, accumulateDx),
    [{ uniform: [batch, tokens] }, dx, dcls, dy],
    grid1d(batch * tokens * w + w, EMBEDDING_WORKGROUP),
  );
}

function checkIndex(kernel: string, index: number, tokens: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= tokens) {
    throw new RangeError(`${kernel}: index must be an integer in 0..${tokens - 1}, got ${index}`);
  }
}

/** y[b, :] = x[b, index, :] (the ViT head reads the class token, index 0). Shapes: y [batch, dim]; x [batch,
 * tokens, dim]. */
export function selectToken(plan: Plan, y: Tensor, x: Tensor, sizes: TokenSizes & { index?: number }): void {
  const k = "selectToken";
  check(k, sizes, 1);
  const { batch, tokens, dim, index = 0 } = sizes;
  checkIndex(k, index, tokens);
  expectElements(k, y, batch * dim, "batch·dim");
  expectElements(k, x, batch * tokens * dim, "batch·tokens·dim");
  const n = batch * (dim / embeddingWidth(dim));
  plan.dispatch(
    k,
    selectTokenWgsl(dim),
    [{ uniform: [batch, tokens, index] }, y, x],
    grid1d(n, EMBEDDING_WORKGROUP),
  );
}

/**
 * Backward of {@link selectToken}: writes dx whole (dy at `index`, zeros elsewhere), or with `accumulate` adds dy
 * into dx[:, index, :] and leaves the other tokens alone.
 */
export function selectTokenBackward(
  plan: Plan,
  dx: Tensor,
  dy: Tensor,
  sizes: TokenSizes & { index?: number; accumulate?: boolean },
): void {
  const k = "selectTokenBackward";
  check(k, sizes, 1);
  const { batch, tokens, dim, index = 0, accumulate = false } = sizes;
  checkIndex(k, index, tokens);
  expectElements(k, dx, batch * tokens * dim, "batch·tokens·dim");
  expectElements(k, dy, batch * dim, "batch·dim");
  const w = dim / embeddingWidth(dim);
  plan.dispatch(
    k,
    selectTokenBackwardWgsl(dim, accumulate),
    [{ uniform: [batch, tokens, index] }, dx, dy],
    grid1d(accumulate ? batch * w : batch * tokens * w, EMBEDDING_WORKGROUP),
  );
}
