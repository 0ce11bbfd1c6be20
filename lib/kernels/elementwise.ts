/** Typed wrappers of the elementwise kernels (`shaders/elementwise.ts`). Arguments: outputs, inputs. */
import { grid1d, type Plan } from "../gpu/plan.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  addWgsl,
  ELEMENTWISE_WORKGROUP,
  geluBackwardWgsl,
  geluForwardWgsl,
} from "../../shaders/elementwise.ts";

function sameSize(kernel: string, ...ts: Tensor[]): number {
  const n = ts[0].size;
  for (const t of ts) {
    if (t.size !== n) {
      throw new TypeError(`${kernel}: ${t.label} has ${t.size} elements [${t.shape}], expected ${n}`);
    }
  }
  return n;
}

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
