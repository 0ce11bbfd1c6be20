/** Typed wrappers of the elementwise kernels (`shaders/elementwise.ts`). Arguments: outputs, inputs. */
import { grid1d, type Plan } from "../gpu/plan.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  accumulateWgsl,
  addWgsl,
  ELEMENTWISE_WORKGROUP,
  geluBackwardWgsl,
  geluForwardWgsl,
  scaleWgsl,
} from "../../shaders/elementwise.ts";
import { sameSize } from "./_check.ts";

/** y = GELU(x), exact erf form. */
export function geluForward(plan: Plan, y: Tensor, x: Tensor): void {
  const n = sameSize("geluForward", y, x);
  plan.dispatch("geluForward", geluForwardWgsl(), [{ uniform: [n] }, y, x], grid1d(n, ELEMENTWISE_WORKGROUP));
}

/** dx = dy·GELU'(x), or dx += … when `accumulate`. */
export function geluBackward(plan: Plan, dx: Tensor, dy: Tensor, x: Tensor, accumulate = false): void {
  const n = sameSize("geluBackward", dx, dy, x);
  plan.dispatch(
    "geluBackward",
    geluBackwardWgsl(accumulate),
    [{ uniform: [n] }, dx, dy, x],
    grid1d(n, ELEMENTWISE_WORKGROUP),
  );
}

/** out = a + b. */
export function add(plan: Plan, out: Tensor, a: Tensor, b: Tensor): void {
  const n = sameSize("add", out, a, b);
  plan.dispatch("add", addWgsl(), [{ uniform: [n] }, out, a, b], grid1d(n, ELEMENTWISE_WORKGROUP));
}

/** Elements per invocation: 4 (vec4) when n is a multiple of 4. */
function widthOf(n: number): 1 | 4 {
  return n % 4 === 0 ? 4 : 1;
}

function sameMemory(a: Tensor, b: Tensor): boolean {
  return a.buffer === b.buffer && a.offset === b.offset;
}

/** out += a: merges a gradient into one that is being accumulated (residual streams, shared inputs). */
export function accumulate(plan: Plan, out: Tensor, a: Tensor): void {
  const n = sameSize("accumulate", out, a);
  if (sameMemory(out, a)) {
    throw new TypeError(`accumulate: ${out.label} cannot be added into itself; use scale by 2`);
  }
  const w = widthOf(n);
  plan.dispatch(
    "accumulate",
    accumulateWgsl(w, false),
    [{ uniform: [n / w] }, out, a],
    grid1d(n / w, ELEMENTWISE_WORKGROUP),
  );
}

/** dst = src (a copy inside the submission; distinct memory). */
export function copy(plan: Plan, dst: Tensor, src: Tensor): void {
  const n = sameSize("copy", dst, src);
  if (sameMemory(dst, src)) return;
  const w = widthOf(n);
  plan.dispatch(
    "copy",
    accumulateWgsl(w, true),
    [{ uniform: [n / w] }, dst, src],
    grid1d(n / w, ELEMENTWISE_WORKGROUP),
  );
}

/** y = alpha·x (alpha rounded to f32); y may be x (in place). */
export function scale(plan: Plan, y: Tensor, x: Tensor, alpha: number): void {
  const n = sameSize("scale", y, x);
  const w = widthOf(n);
  const inPlace = sameMemory(y, x);
  plan.dispatch(
    "scale",
    scaleWgsl(w, inPlace),
    [{ uniform: [n / w, { f32: alpha }] }, y, ...(inPlace ? [] : [x])],
    grid1d(n / w, ELEMENTWISE_WORKGROUP),
  );
}
