/** CPU float64 reference of the elementwise kernels. Shapes: any; arrays are flat. */

/** erf to double precision (Abramowitz–Stegun 7.1.28 is too coarse; this uses the series / continued fraction). */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 2.5) {
    // Maclaurin series: converges fast for |x| < 2.5
    let term = a, sum = a;
    for (let n = 1; n < 100; n++) {
      term *= (-a * a) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz), accurate for |x| ≥ 2.5
  let f = a, c = a, d = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    d = a + an * d;
    d = 1 / d;
    c = a + an / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** y = x·Φ(x). */
export function geluForward(x: Float64Array): Float64Array {
  return x.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
}

/** dx = dy·(Φ(x) + x·φ(x)). */
export function geluBackward(dy: Float64Array, x: Float64Array): Float64Array {
  return x.map((v, i) => {
    const cdf = 0.5 * (1 + erf(v / Math.SQRT2));
    const pdf = Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);
    return dy[i] * (cdf + v * pdf);
  });
}

/** out = a + b. */
export function add(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((v, i) => v + b[i]);
}

/** out + a (accumulate). */
export function accumulate(out: Float64Array, a: Float64Array): Float64Array {
  return out.map((v, i) => v + a[i]);
}

/** alpha·x. */
export function scale(x: Float64Array, alpha: number): Float64Array {
  return x.map((v) => alpha * v);
}
