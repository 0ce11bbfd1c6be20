import * as ref from "../reference/norm.ts";
import { layerNormBackward, layerNormForward, type LayerNormVariant } from "../../lib/kernels/norm.ts";
import {
  checkGradients,
  dot,
  expectTensor,
  poisoned,
  randn,
  runPlan,
  testGpu,
  type Tolerance,
  upload,
} from "../support/check.ts";

const FORWARD_TOL: Tolerance = { atol: 1e-5, rtol: 1e-4 };
// dx loses about ε·|mean|·rstd relative precision in x − mean; rows of 3 elements can have a small variance.
const BACKWARD_TOL: Tolerance = { atol: 1e-4, rtol: 5e-4 };

/** x with a per-row offset, so a one-pass variance would lose digits; rounded to float32. */
function inputs(rows: number, dim: number, seed: number) {
  const offsets = randn(rows, seed, 4);
  const x = randn(rows * dim, seed + 1, 2).map((v, i) => Math.fround(v + offsets[Math.floor(i / dim)]));
  return {
    x,
    gamma: randn(dim, seed + 2, 0.5).map((v) => Math.fround(v + 1)),
    beta: randn(dim, seed + 3, 0.5),
    dy: randn(rows * dim, seed + 4),
  };
}

Deno.test("reference layerNormBackward matches finite differences", () => {
  const rows = 3, dim = 5;
  const { x, gamma, beta } = inputs(rows, dim, 1);
  const probe = randn(rows * dim, 9);
  const g = ref.layerNormBackward(probe, x, gamma, rows, dim);
  checkGradients(
    "layerNorm",
    ([x, gamma, beta]) => dot(ref.layerNormForward(x, gamma, beta, rows, dim).y, probe),
    [x, gamma, beta],
    [g.dx, g.dgamma, g.dbeta],
  );
});

const shapes: [number, number][] = [[1, 1], [1, 3], [4, 1], [5, 130], [7, 256], [33, 128], [301, 384], [
  2500,
  3,
]];
for (const variant of ["fast", "naive"] as LayerNormVariant[]) {
  for (const [rows, dim] of shapes) {
    Deno.test(`layerNorm forward and backward (${variant}) match the reference at rows=${rows} dim=${dim}`, async () => {
      const gpu = await testGpu();
      const { x, gamma, beta, dy } = inputs(rows, dim, rows * 1000 + dim);
      const fwd = ref.layerNormForward(x, gamma, beta, rows, dim);
      const bwd = ref.layerNormBackward(dy, x, gamma, rows, dim);
      const y = poisoned(gpu, [rows, dim], "y"), mean = poisoned(gpu, [rows], "mean");
      const rstd = poisoned(gpu, [rows], "rstd"), dx = poisoned(gpu, [rows, dim], "dx");
      // dgamma/dbeta accumulate, so start them from known values rather than NaN.
      const dgamma0 = randn(dim, 5), dbeta0 = randn(dim, 6);
      const dgamma = upload(gpu, dgamma0, [dim], "dgamma"), dbeta = upload(gpu, dbeta0, [dim], "dbeta");
      const xt = upload(gpu, x, [rows, dim], "x"), gt = upload(gpu, gamma, [dim], "gamma");
      await runPlan(gpu, (plan) => {
        layerNormForward(plan, y, mean, rstd, xt, gt, upload(gpu, beta, [dim], "beta"), {
          rows,
          dim,
          variant,
        });
        layerNormBackward(plan, dx, dgamma, dbeta, upload(gpu, dy, [rows, dim], "dy"), xt, mean, rstd, gt, {
          rows,
          dim,
          variant,
        });
      });
      await expectTensor(gpu, "y", y, fwd.y, FORWARD_TOL);
      await expectTensor(gpu, "mean", mean, fwd.mean, FORWARD_TOL);
      await expectTensor(gpu, "rstd", rstd, fwd.rstd, FORWARD_TOL);
      await expectTensor(gpu, "dx", dx, bwd.dx, BACKWARD_TOL);
      const sumTol = { atol: 1e-4 * Math.sqrt(rows), rtol: 1e-4 };
      await expectTensor(gpu, "dgamma", dgamma, dgamma0.map((v, j) => v + bwd.dgamma[j]), sumTol);
      await expectTensor(gpu, "dbeta", dbeta, dbeta0.map((v, j) => v + bwd.dbeta[j]), sumTol);
    });
  }
}

Deno.test("layerNormBackward adds into dx with accumulateDx and with a small explicit chunk", async () => {
  const gpu = await testGpu();
  const rows = 77, dim = 20;
  const { x, gamma, dy } = inputs(rows, dim, 42);
  const bwd = ref.layerNormBackward(dy, x, gamma, rows, dim);
  const fwd = ref.layerNormForward(x, gamma, new Float64Array(dim), rows, dim);
  const dx0 = randn(rows * dim, 43);
  const dx = upload(gpu, dx0, [rows, dim], "dx");
  const dgamma = upload(gpu, new Float64Array(dim), [dim], "dgamma");
  const dbeta = upload(gpu, new Float64Array(dim), [dim], "dbeta");
  const dyt = upload(gpu, dy, [rows, dim], "dy"), xt = upload(gpu, x, [rows, dim], "x");
  const mean = upload(gpu, fwd.mean, [rows], "mean"), rstd = upload(gpu, fwd.rstd, [rows], "rstd");
  await runPlan(gpu, (plan) => {
    // Twice: the parameter gradients must double, dx gains both contributions.
    for (let i = 0; i < 2; i++) {
      layerNormBackward(plan, dx, dgamma, dbeta, dyt, xt, mean, rstd, upload(gpu, gamma, [dim]), {
        rows,
        dim,
        accumulateDx: true,
        chunkRows: 10,
      });
    }
  });
  await expectTensor(gpu, "dx", dx, dx0.map((v, i) => v + 2 * bwd.dx[i]), BACKWARD_TOL);
  await expectTensor(gpu, "dgamma", dgamma, bwd.dgamma.map((v) => 2 * v), BACKWARD_TOL);
  await expectTensor(gpu, "dbeta", dbeta, bwd.dbeta.map((v) => 2 * v), BACKWARD_TOL);
});

Deno.test("layerNormForward rejects a gamma of the wrong size, naming it", async () => {
  const gpu = await testGpu();
  await runPlan(gpu, (plan) => {
    const t = (n: number, label: string) => upload(gpu, new Float64Array(n), [n], label);
    let message = "";
    try {
      layerNormForward(plan, t(6, "y"), t(2, "mean"), t(2, "rstd"), t(6, "x"), t(4, "gamma"), t(3, "beta"), {
        rows: 2,
        dim: 3,
      });
    } catch (e) {
      message = e instanceof TypeError ? e.message : `not a TypeError: ${e}`;
    }
    if (!message.includes("gamma")) throw new Error(`expected a TypeError naming gamma, got "${message}"`);
  });
});
