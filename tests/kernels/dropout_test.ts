import * as ref from "../reference/dropout.ts";
import {
  dropoutBackward,
  dropoutForward,
  residualDropPath,
  residualDropPathBackward,
} from "../../lib/kernels/dropout.ts";
import { Plan, UniformBlock } from "../../lib/gpu/plan.ts";
import { readTensor } from "../../lib/gpu/tensor.ts";
import { deriveSeed } from "../../lib/gpu/random.ts";
import {
  assertClose,
  checkGradients,
  dot,
  expectTensor,
  poisoned,
  randn,
  runPlan,
  testGpu,
  upload,
} from "../support/check.ts";

// A float32 product of float32 values is the rounded exact product: GPU and reference agree bit for bit.
const EXACT = { atol: 0, rtol: 0 };
// A multiply then add may be fused on the GPU: one rounding fewer.
const ADD_TOL = { atol: 1e-6, rtol: 1e-6 };

const f32 = (a: Float64Array) => a.map(Math.fround);

Deno.test("reference dropout and drop-path backwards match finite differences", () => {
  const x = randn(30, 1), probe = randn(30, 2), res = randn(30, 3);
  checkGradients("dropout", ([x]) => dot(ref.dropoutForward(x, 0.4, 99), probe), [x], [
    ref.dropoutBackward(probe, 0.4, 99),
  ]);
  const g = ref.residualDropPathBackward(probe, 6, 0.5, 5);
  checkGradients(
    "dropPath",
    ([r, b]) => dot(ref.residualDropPath(r, b, 6, 0.5, 5), probe),
    [res, x],
    [g.dresidual, g.dbranch],
  );
});

for (const n of [1, 7, 1024, 70_001]) {
  for (const p of [0.1, 0.5]) {
    Deno.test(`dropout forward and backward reproduce the reference mask exactly (n=${n}, p=${p})`, async () => {
      const gpu = await testGpu();
      const seed = 1234 + n;
      const x = randn(n, n), dy = randn(n, n + 1), base = randn(n, n + 2);
      const y = poisoned(gpu, [n], "y"),
        dx = poisoned(gpu, [n], "dx"),
        dxAcc = upload(gpu, base, [n], "dxAcc");
      const inPlace = upload(gpu, x, [n], "inPlace");
      const dyt = upload(gpu, dy, [n], "dy");
      await runPlan(gpu, (plan) => {
        dropoutForward(plan, y, upload(gpu, x, [n], "x"), { p, seed });
        dropoutForward(plan, inPlace, inPlace, { p, seed });
        dropoutBackward(plan, dx, dyt, { p, seed });
        dropoutBackward(plan, dxAcc, dyt, { p, seed, accumulate: true });
      });
      const yRef = f32(ref.dropoutForward(x, p, seed)), dxRef = f32(ref.dropoutBackward(dy, p, seed));
      await expectTensor(gpu, "y", y, yRef, EXACT);
      await expectTensor(gpu, "y (in place)", inPlace, yRef, EXACT);
      await expectTensor(gpu, "dx", dx, dxRef, EXACT);
      await expectTensor(gpu, "dx (accumulated)", dxAcc, dxRef.map((v, i) => v + base[i]), ADD_TOL);
    });
  }
}

Deno.test("dropout reads a per-step seed from a UniformBlock, so one plan gives a new mask each step", async () => {
  const gpu = await testGpu();
  const n = 4099, p = 0.3;
  const seeds = new UniformBlock(gpu, 8, "seeds");
  const x = randn(n, 5);
  const y = poisoned(gpu, [n], "y");
  const plan = new Plan(gpu, "dropout steps");
  dropoutForward(plan, y, upload(gpu, x, [n], "x"), { p, seed: { block: seeds, word: 5 } });
  const masks: string[] = [];
  for (let step = 0; step < 3; step++) {
    const seed = deriveSeed(42, step, 7);
    seeds.u32.fill(0xdeadbeef); // the other words must not be read
    seeds.u32[5] = seed;
    seeds.flush();
    await plan.run();
    const got = await readTensor(gpu, y);
    assertClose(`y at step ${step}`, got, f32(ref.dropoutForward(x, p, seed)), EXACT);
    masks.push(Array.from(got, (v) => (v === 0 ? "0" : "1")).join(""));
  }
  plan.destroy();
  if (new Set(masks).size !== 3) throw new Error("three steps gave repeated masks");
});

Deno.test("dropout drops about a fraction p, keeps everything at p=0 and drops everything at p=1", async () => {
  const gpu = await testGpu();
  const n = 100_000;
  const x = new Float64Array(n).fill(1);
  const y3 = poisoned(gpu, [n], "y3"), y0 = poisoned(gpu, [n], "y0"), y1 = poisoned(gpu, [n], "y1");
  const xt = upload(gpu, x, [n], "x");
  await runPlan(gpu, (plan) => {
    dropoutForward(plan, y3, xt, { p: 0.3, seed: 77 });
    dropoutForward(plan, y0, xt, { p: 0, seed: 77 });
    dropoutForward(plan, y1, xt, { p: 1, seed: 77 });
  });
  const kept = (await readTensor(gpu, y3)).filter((v) => v !== 0).length / n;
  // Binomial standard deviation √(0.21/n) ≈ 0.0014: ±0.01 is seven of them.
  if (Math.abs(kept - 0.7) > 0.01) throw new Error(`kept ${kept}, expected 0.7 ± 0.01`);
  await expectTensor(gpu, "y (p=0)", y0, x, EXACT);
  await expectTensor(gpu, "y (p=1)", y1, new Float64Array(n), EXACT);
});

const pathShapes: [number, number][] = [[1, 1], [3, 5], [7, 130], [16, 49 * 128]];
for (const [batch, perSample] of pathShapes) {
  for (const p of [0, 0.5]) {
    Deno.test(`residualDropPath and its backward match the reference (batch ${batch}, ${perSample} per sample, p=${p})`, async () => {
      const gpu = await testGpu();
      const n = batch * perSample, seed = 900 + batch;
      const res = randn(n, n), br = randn(n, n + 1), dout = randn(n, n + 2), base = randn(n, n + 3);
      const out = poisoned(gpu, [n], "out"), dbranch = poisoned(gpu, [n], "dbranch");
      const dresidual = poisoned(gpu, [n], "dresidual");
      const inPlace = upload(gpu, res, [n], "inPlace");
      const dbranchAcc = upload(gpu, base, [n], "dbranchAcc"),
        dresidualAcc = upload(gpu, base, [n], "dresAcc");
      const doutAliased = upload(gpu, dout, [n], "doutAliased"), dbranch2 = poisoned(gpu, [n], "dbranch2");
      const brt = upload(gpu, br, [n], "branch"), doutt = upload(gpu, dout, [n], "dout");
      const o = { batch, perSample, p, seed };
      await runPlan(gpu, (plan) => {
        residualDropPath(plan, out, upload(gpu, res, [n], "residual"), brt, o);
        residualDropPath(plan, inPlace, inPlace, brt, o);
        residualDropPathBackward(plan, dresidual, dbranch, doutt, o);
        residualDropPathBackward(plan, dresidualAcc, dbranchAcc, doutt, { ...o, accumulate: true });
        residualDropPathBackward(plan, doutAliased, dbranch2, doutAliased, o);
      });
      const outRef = ref.residualDropPath(res, br, batch, p, seed);
      const g = ref.residualDropPathBackward(dout, batch, p, seed);
      await expectTensor(gpu, "out", out, outRef, ADD_TOL);
      await expectTensor(gpu, "out (in place)", inPlace, outRef, ADD_TOL);
      await expectTensor(gpu, "dbranch", dbranch, f32(g.dbranch), EXACT);
      await expectTensor(gpu, "dresidual", dresidual, g.dresidual, EXACT);
      await expectTensor(
        gpu,
        "dbranch (accumulated)",
        dbranchAcc,
        g.dbranch.map((v, i) => v + base[i]),
        ADD_TOL,
      );
      await expectTensor(
        gpu,
        "dresidual (accumulated)",
        dresidualAcc,
        dout.map((v, i) => v + base[i]),
        ADD_TOL,
      );
      await expectTensor(gpu, "dbranch (dresidual aliasing dout)", dbranch2, f32(g.dbranch), EXACT);
      await expectTensor(gpu, "dout left alone when aliased", doutAliased, dout, EXACT);
    });
  }
}

Deno.test("residualDropPath drops whole samples at about rate p, with the seed read from a UniformBlock", async () => {
  const gpu = await testGpu();
  const batch = 4000, perSample = 3, p = 0.25, seed = deriveSeed(7, 11, 2);
  const n = batch * perSample;
  const seeds = new UniformBlock(gpu, 6, "seeds");
  seeds.u32.fill(0xdeadbeef);
  seeds.u32[2] = seed;
  seeds.flush();
  const out = poisoned(gpu, [n], "out");
  const zeros = upload(gpu, new Float64Array(n), [n], "residual");
  const ones = upload(gpu, new Float64Array(n).fill(1), [n], "branch");
  await runPlan(
    gpu,
    (plan) =>
      residualDropPath(plan, out, zeros, ones, { batch, perSample, p, seed: { block: seeds, word: 2 } }),
  );
  const y = await readTensor(gpu, out);
  const mask = ref.dropPathMask(batch, p, seed);
  let dropped = 0;
  for (let b = 0; b < batch; b++) {
    const v = y.subarray(b * perSample, (b + 1) * perSample);
    if (v.some((e) => e !== mask[b])) {
      throw new Error(`sample ${b}: got ${v}, expected ${mask[b]} throughout`);
    }
    if (v[0] === 0) dropped++;
  }
  // Binomial standard deviation √(p(1−p)/batch) ≈ 0.0068: ±0.04 is six of them.
  if (Math.abs(dropped / batch - p) > 0.04) {
    throw new Error(`dropped ${dropped / batch}, expected ${p} ± 0.04`);
  }
});
