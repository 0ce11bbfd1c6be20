/** CPU float64 reference of the matmul family: plain loops over flat arrays, same names as the GPU wrappers. */
import { erf, geluBackward, geluForward } from "./elementwise.ts";

/** Options of the reference {@link matmul}; the same meaning as the GPU wrapper's (defaults: dense, unbatched). */
export interface MatmulRefOptions {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
  bias?: Float64Array;
  activation?: "none" | "relu" | "gelu";
  geluGradOf?: Float64Array;
  accumulate?: boolean;
  alpha?: number;
  batch?: { dims: number[]; strideA: number[]; strideB: number[]; strideC: number[] };
  offA?: number;
  offB?: number;
  offC?: number;
  lda?: number;
  ldb?: number;
  ldc?: number;
}

/**
 * C[M,N] (+)= act(alpha·op(A)·op(B) + bias) on strided views. `c` is the initial content of the whole C tensor
 * (only the addressed elements change). Returns the new C and the pre-activation tensor (same layout as C, NaN
 * where not written).
 */
export function matmul(
  c: Float64Array,
  a: Float64Array,
  b: Float64Array,
  o: MatmulRefOptions,
): { c: Float64Array; pre: Float64Array } {
  const { m, n, k } = o;
  const out = c.slice();
  const pre = new Float64Array(c.length).fill(NaN);
  const lda = o.lda ?? (o.transA ? m : k), ldb = o.ldb ?? (o.transB ? k : n), ldc = o.ldc ?? n;
  const dims = o.batch?.dims ?? [1];
  const [d1, d2] = [dims[0], dims[1] ?? 1];
  const st = (s: number[] | undefined, i: number) => s?.[i] ?? 0;
  for (let z1 = 0; z1 < d1; z1++) {
    for (let z2 = 0; z2 < d2; z2++) {
      const oa = (o.offA ?? 0) + z1 * st(o.batch?.strideA, 0) + z2 * st(o.batch?.strideA, 1);
      const ob = (o.offB ?? 0) + z1 * st(o.batch?.strideB, 0) + z2 * st(o.batch?.strideB, 1);
      const oc = (o.offC ?? 0) + z1 * st(o.batch?.strideC, 0) + z2 * st(o.batch?.strideC, 1);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) {
            const av = a[oa + (o.transA ? p * lda + i : i * lda + p)]; // op(A)[i, p]
            const bv = b[ob + (o.transB ? j * ldb + p : p * ldb + j)]; // op(B)[p, j]
            s += av * bv;
          }
          const idx = oc + i * ldc + j;
          let v = (o.alpha ?? 1) * s + (o.bias ? o.bias[j] : 0);
          if (o.geluGradOf) v = geluBackward(Float64Array.of(v), Float64Array.of(o.geluGradOf[idx]))[0];
          pre[idx] = v;
          if (o.activation === "relu") v = Math.max(v, 0);
          else if (o.activation === "gelu") v = 0.5 * v * (1 + erf(v / Math.SQRT2));
          out[idx] = o.accumulate ? out[idx] + v : v;
        }
      }
    }
  }
  return { c: out, pre };
}

/** y[rows, out] = act(x[rows, in]·Wᵀ + b) with W [out, in]; also returns the pre-activation. */
export function linearForward(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | undefined,
  rows: number,
  inF: number,
  outF: number,
  activation: "none" | "relu" | "gelu" = "none",
): { y: Float64Array; pre: Float64Array } {
  const pre = new Float64Array(rows * outF);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias[o] : 0;
      for (let i = 0; i < inF; i++) s += x[r * inF + i] * w[o * inF + i];
      pre[r * outF + o] = s;
    }
  }
  const y = activation === "gelu"
    ? geluForward(pre)
    : activation === "relu"
    ? pre.map((v) => Math.max(v, 0))
    : pre.slice();
  return { y, pre };
}

/** Gradients of Σ dy·linearForward(x, W, b) (no activation): dx [rows, in], dW [out, in], db [out]. */
export function linearBackward(
  dy: Float64Array,
  x: Float64Array,
  w: Float64Array,
  rows: number,
  inF: number,
  outF: number,
): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const dx = new Float64Array(rows * inF);
  const dw = new Float64Array(outF * inF);
  const db = columnSum(dy, rows, outF);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < outF; o++) {
      const g = dy[r * outF + o];
      for (let i = 0; i < inF; i++) {
        dx[r * inF + i] += g * w[o * inF + i];
        dw[o * inF + i] += g * x[r * inF + i];
      }
    }
  }
  return { dx, dw, db };
}

/** out[c] = Σ_r x[r, c] for x [rows, cols]. */
export function columnSum(x: Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c] += x[r * cols + c];
  return out;
}
