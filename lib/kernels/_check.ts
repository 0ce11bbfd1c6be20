/** Argument checks shared by the kernel wrappers: errors name the kernel and the tensor, and say what was expected. */
import type { Tensor } from "../gpu/tensor.ts";

/** Throws a TypeError unless `t` holds exactly `n` elements (`what` says which shape was expected). */
export function expectElements(kernel: string, t: Tensor, n: number, what: string): void {
  if (t.size !== n) {
    throw new TypeError(`${kernel}: ${t.label} has ${t.size} elements [${t.shape}], expected ${n} (${what})`);
  }
}

/** The common element count of `ts`; throws a TypeError naming the first tensor that differs. */
export function sameSize(kernel: string, ...ts: Tensor[]): number {
  const n = ts[0].size;
  for (const t of ts) {
    if (t.size !== n) {
      throw new TypeError(`${kernel}: ${t.label} has ${t.size} elements [${t.shape}], expected ${n}`);
    }
  }
  return n;
}

/** Throws a RangeError unless `v` is an integer ≥ 1. */
export function positiveInt(kernel: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`${kernel}: ${name} must be a positive integer, got ${v}`);
  }
}
