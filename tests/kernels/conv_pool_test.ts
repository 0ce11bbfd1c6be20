import * as ref from "../reference/conv.ts";
import {
  CCT_POOL,
  conv2dReluMaxPoolBackwardWeights,
  conv2dReluMaxPoolForward,
  type Conv2dReluMaxPoolOptions,
  conv2dReluMaxPoolSizes,
  conv2dReluMaxPoolWeightSplits,
} from "../../lib/kernels/conv_pool.ts";
import {
  conv2dBackwardWeights,
  conv2dForward,
  type ConvVariant,
  maxPool2dBackward,
  maxPool2dForward,
} from "../../lib/kernels/conv.ts";
import type { Gpu } from "../../lib/gpu/device.ts";
import { Plan } from "../../lib/gpu/plan.ts";
import { readTensor, readTensorInt } from "../../lib/gpu/tensor.ts";
import {
  assertClose,
  assertThrows,
  checkGradients,
  dot,
  expectTensor,
  poisoned,
  randn,
  rng,
  runPlan,
  testGpu,
  upload,
} from "../support/check.ts";

/** Float32 conv sums of ≤ 75 O(1) products against float64 (the pooled values). */
const FORWARD_TOL = { atol: 1e-5, rtol: 1e-5 };
/** Weight gradients: float32 sums of up to ~2,000 O(1) terms against float64. */
const WEIGHT_TOL = { atol: 1e-4, rtol: 1e-4 };

interface StageCase extends Conv2dReluMaxPoolOptions {
  title: string;
  /** Small integers (many exact ties, many ReLU zeros) instead of normal values. */
  ties?: boolean;
}

const cases: StageCase[] = [
  {
    title: "1 channel on 7×9 (odd sizes), 6 output channels, batch 5",
    batch: 5,
    inChannels: 1,
    height: 7,
    width: 9,
    outChannels: 6,
    kernel: 3,
    stride: 1,
    padding: 1,
  },
  {
    title: "3 channels on 7×9, 5 output channels, batch 1",
    batch: 1,
    inChannels: 3,
    height: 7,
    width: 9,
    outChannels: 5,
    kernel: 3,
    stride: 1,
    padding: 1,
  },
  {
    title: "1 channel on 28×28 (Fashion-MNIST), 10 output channels, batch 2",
    batch: 2,
    inChannels: 1,
    height: 28,
    width: 28,
    outChannels: 10,
    kernel: 3,
    stride: 1,
    padding: 1,
  },
  {
    title: "integer inputs with exact ties and ReLU zeros, 3 channels on 9×7, 7 output channels, batch 2",
    batch: 2,
    inChannels: 3,
    height: 9,
    width: 7,
    outChannels: 7,
    kernel: 3,
    stride: 1,
    padding: 1,
    ties: true,
  },
  {
    title: "integer inputs with exact ties, 1 channel on 8×10, 9 output channels, batch 3",
    batch: 3,
    inChannels: 1,
    height: 8,
    width: 10,
    outChannels: 9,
    kernel: 3,
    stride: 1,
    padding: 1,
    ties: true,
  },
  {
    title: "a k5 p2 conv, 1 channel on 11×6, 8 output channels, batch 2",
    batch: 2,
    inChannels: 1,
    height: 11,
    width: 6,
    outChannels: 8,
    kernel: 5,
    stride: 1,
    padding: 2,
  },
  {
    title: "a k3 s2 p0 conv and a 2×2 stride-2 pool, 2 channels on 13×12, 4 output channels, batch 2",
    batch: 2,
    inChannels: 2,
    height: 13,
    width: 12,
    outChannels: 4,
    kernel: 3,
    stride: 2,
    padding: 0,
    pool: { kernel: 2, stride: 2, padding: 0 },
  },
];

/** Inputs of a case: x, w and dy (NCHW pooled), fresh for every seed. */
function inputs(c: StageCase, seed: number) {
  const nx = c.batch * c.inChannels * c.height * c.width;
  const nw = c.outChannels * c.inChannels * c.kernel * c.kernel;
  const s = conv2dReluMaxPoolSizes(c);
  const ny = c.batch * c.outChannels * s.pooledH * s.pooledW;
  if (!c.ties) return { x: randn(nx, seed), w: randn(nw, seed + 1, 0.5), dy: randn(ny, seed + 2) };
  // Values in {0, 0, 0, 1, 2} and weights in {−1, 0, 1}: integer conv outputs, exact in float32 and float64.
  const u = rng(seed);
  const x = Float64Array.from({ length: nx }, () => Math.max(0, Math.floor(u() * 5) - 2));
  const w = Float64Array.from({ length: nw }, () => Math.floor(u() * 3) - 1);
  return { x, w, dy: randn(ny, seed + 2) };
}

/** The unfused float64 composition: ReLU(conv), its pool (NCHW) and the pool's sizes. */
function reference(c: StageCase, x: Float64Array, w: Float64Array) {
  const conv = ref.relu(ref.conv2dForward(x, w, undefined, c));
  const s = conv2dReluMaxPoolSizes(c);
  const pool = {
    batch: c.batch,
    channels: c.outChannels,
    height: s.convH,
    width: s.convW,
    ...(c.pool ?? CCT_POOL),
  };
  return { conv, pool, ...ref.maxPool2dForward(conv, pool) };
}

const toLayout = (c: StageCase, a: Float64Array) =>
  c.outLayout === "tokens" ? ref.nchwToTokens(a, c.batch, c.outChannels) : a;
const fromLayout = <T extends Float64Array | Int32Array>(c: StageCase, a: T) =>
  c.outLayout === "tokens" ? ref.tokensToNchw(a, c.batch, c.outChannels) : a;

/**
 * Every argmax equals the reference's, except (random data only) where float32 rounding may reorder a near-tie:
 * there the chosen conv output must equal the maximum within tolerance.
 */
function checkArgmax(c: StageCase, got: Int32Array, conv: Float64Array, y: Float64Array, want: Int32Array) {
  const plane = conv.length / (c.batch * c.outChannels), pooledPlane = y.length / (c.batch * c.outChannels);
  let bad = 0;
  for (let i = 0; i < want.length; i++) {
    if (got[i] === want[i]) continue;
    const bc = Math.floor(i / pooledPlane);
    const v = conv[bc * plane + got[i]];
    if (c.ties || !(Math.abs(v - y[i]) <= 1e-5 * (1 + Math.abs(y[i])))) bad++;
  }
  if (bad) throw new Error(`argmax: ${bad} of ${want.length} differ from the reference`);
}

for (const [i, base] of cases.entries()) {
  for (const layout of ["nchw", "tokens"] as const) {
    const c: StageCase = { ...base, outLayout: layout };
    Deno.test(
      `fused conv ▸ ReLU ▸ max-pool forward and weight gradient (accumulate off/on, splits 1/3/default) match the float64 reference for ${c.title}, ${layout} layout`,
      async () => {
        const gpu = await testGpu();
        const { x, w, dy } = inputs(c, 100 * i + (layout === "tokens" ? 50 : 0));
        const r = reference(c, x, w);
        const shape = conv2dReluMaxPoolSizes(c).pooledShape;
        const xShape = [c.batch, c.inChannels, c.height, c.width];
        const wShape = [c.outChannels, c.inChannels, c.kernel, c.kernel];
        const pooled = poisoned(gpu, shape, "pooled"), argmax = poisoned(gpu, shape, "argmax");
        const xt = upload(gpu, x, xShape, "x");
        await runPlan(
          gpu,
          (plan) => conv2dReluMaxPoolForward(plan, pooled, argmax, xt, upload(gpu, w, wShape), c),
        );
        await expectTensor(
          gpu,
          "pooled",
          pooled,
          toLayout(c, r.y),
          c.ties ? { atol: 0, rtol: 0 } : FORWARD_TOL,
        );
        const am = fromLayout(c, await readTensorInt(gpu, argmax));
        checkArgmax(c, am, r.conv, r.y, r.argmax);

        // The weight gradient through the GPU's argmax (the mask: pooled > 0 ⇔ ReLU output at argmax > 0).
        const dconv = ref.reluBackward(ref.maxPool2dBackward(dy, am, r.pool), r.conv);
        const dwRef = ref.conv2dBackwardWeights(dconv, x, c);
        const dyt = upload(gpu, toLayout(c, dy), shape, "dy");
        const start = randn(dwRef.length, 900 + i);
        const defaultSplits = conv2dReluMaxPoolWeightSplits(c);
        for (const splits of [1, 3, undefined]) {
          const dw = poisoned(gpu, wShape, "dw"), dwAcc = upload(gpu, start, wShape, "dw accumulated");
          await runPlan(gpu, (plan) => {
            conv2dReluMaxPoolBackwardWeights(plan, dw, dyt, argmax, pooled, xt, { ...c, splits });
            conv2dReluMaxPoolBackwardWeights(plan, dwAcc, dyt, argmax, pooled, xt, {
              ...c,
              splits,
              accumulate: true,
            });
          });
          const label = `dw (splits ${splits ?? `default ${defaultSplits}`})`;
          await expectTensor(gpu, label, dw, dwRef, WEIGHT_TOL);
          await expectTensor(
            gpu,
            `${label} accumulated`,
            dwAcc,
            dwRef.map((v, j) => v + start[j]),
            WEIGHT_TOL,
          );
        }
      },
    );
  }
}

Deno.test("the gather variant of the fused weight gradient gives the same sums as the default (select) kernel", async () => {
  const gpu = await testGpu();
  for (
    const [i, c] of [cases[1], { ...cases[3], outLayout: "tokens" as const }, {
      ...cases[6],
      outLayout: "tokens" as const,
    }].entries()
  ) {
    const { x, w, dy } = inputs(c, 300 + i);
    const shape = conv2dReluMaxPoolSizes(c).pooledShape;
    const xShape = [c.batch, c.inChannels, c.height, c.width];
    const wShape = [c.outChannels, c.inChannels, c.kernel, c.kernel];
    const pooled = poisoned(gpu, shape, "pooled"), argmax = poisoned(gpu, shape, "argmax");
    const xt = upload(gpu, x, xShape, "x"), dyt = upload(gpu, toLayout(c, dy), shape, "dy");
    const dw = poisoned(gpu, wShape, "dw"), dwGather = poisoned(gpu, wShape, "dw gathered");
    await runPlan(gpu, (plan) => {
      conv2dReluMaxPoolForward(plan, pooled, argmax, xt, upload(gpu, w, wShape), c);
      conv2dReluMaxPoolBackwardWeights(plan, dw, dyt, argmax, pooled, xt, c);
      conv2dReluMaxPoolBackwardWeights(plan, dwGather, dyt, argmax, pooled, xt, { ...c, gatherTaps: true });
    });
    const r = reference(c, x, w);
    const am = fromLayout(c, await readTensorInt(gpu, argmax));
    const dwRef = ref.conv2dBackwardWeights(
      ref.reluBackward(ref.maxPool2dBackward(dy, am, r.pool), r.conv),
      x,
      c,
    );
    await expectTensor(gpu, `dw (${c.title})`, dw, dwRef, WEIGHT_TOL);
    await expectTensor(gpu, `dw gathered (${c.title})`, dwGather, dwRef, WEIGHT_TOL);
  }
});

Deno.test("the default split of the batch-128 first stage is > 1 (the split path is what runs in training)", () => {
  const o = {
    batch: 128,
    inChannels: 1,
    height: 28,
    width: 28,
    outChannels: 64,
    kernel: 3,
    stride: 1,
    padding: 1,
  };
  const splits = conv2dReluMaxPoolWeightSplits(o);
  if (!(splits > 1)) throw new Error(`expected a split reduction, got ${splits}`);
});

Deno.test("the composed reference weight gradient of conv ▸ ReLU ▸ max-pool matches finite differences", () => {
  const c: StageCase = { ...cases[1], title: "" };
  const { x, w } = inputs(c, 17);
  const r = reference(c, x, w);
  const probe = randn(r.y.length, 18);
  const grad = ref.conv2dBackwardWeights(
    ref.reluBackward(ref.maxPool2dBackward(probe, r.argmax, r.pool), r.conv),
    x,
    c,
  );
  checkGradients("conv ▸ relu ▸ maxpool", ([w]) => dot(reference(c, x, w).y, probe), [w], [grad], {
    samples: 40,
  });
});

/** Conv forward variants on this adapter whose FMA order the fused kernel reproduces (not "naive"). */
function variants(gpu: Gpu): (ConvVariant | undefined)[] {
  return gpu.hasSubgroups && gpu.subgroupSize === 8
    ? [undefined, "blocked", "subgroup"]
    : [undefined, "blocked"];
}

const gpuCases: StageCase[] = [
  {
    title: "the cct_2_3x2 first stage (1×28×28 → 64 channels) at batch 3, NCHW",
    batch: 3,
    inChannels: 1,
    height: 28,
    width: 28,
    outChannels: 64,
    kernel: 3,
    stride: 1,
    padding: 1,
  },
  {
    title: "a 3×15×13 stage with ties to 36 channels at batch 2, tokens",
    batch: 2,
    inChannels: 3,
    height: 15,
    width: 13,
    outChannels: 36,
    kernel: 3,
    stride: 1,
    padding: 1,
    outLayout: "tokens",
    ties: true,
  },
];

for (const [i, c] of gpuCases.entries()) {
  Deno.test(
    `the fused forward is bit-identical to conv2dForward(relu) + maxPool2dForward and its weight gradient matches maxPool2dBackward + conv2dBackwardWeights on the GPU for ${c.title}`,
    async () => {
      const gpu = await testGpu();
      const { x, w, dy } = inputs(c, 500 + i);
      const s = conv2dReluMaxPoolSizes(c);
      const xShape = [c.batch, c.inChannels, c.height, c.width];
      const wShape = [c.outChannels, c.inChannels, c.kernel, c.kernel];
      const convShape = [c.batch, c.outChannels, s.convH, s.convW];
      const pool = {
        batch: c.batch,
        channels: c.outChannels,
        height: s.convH,
        width: s.convW,
        ...CCT_POOL,
        outLayout: c.outLayout,
      };
      const xt = upload(gpu, x, xShape, "x"), wt = upload(gpu, w, wShape, "w");
      const dyt = upload(gpu, toLayout(c, dy), s.pooledShape, "dy");
      const pooled = poisoned(gpu, s.pooledShape, "pooled"), argmax = poisoned(gpu, s.pooledShape, "argmax");
      const dw = poisoned(gpu, wShape, "dw");
      await runPlan(gpu, (plan) => {
        conv2dReluMaxPoolForward(plan, pooled, argmax, xt, wt, c);
        conv2dReluMaxPoolBackwardWeights(plan, dw, dyt, argmax, pooled, xt, c);
      });
      const fusedY = new Uint32Array((await readTensor(gpu, pooled)).buffer);
      const fusedArg = await readTensorInt(gpu, argmax);
      const fusedDw = await readTensor(gpu, dw);
      for (const variant of variants(gpu)) {
        const conv = poisoned(gpu, convShape, "conv"), dconv = poisoned(gpu, convShape, "dconv");
        const y = poisoned(gpu, s.pooledShape, "y"), am = poisoned(gpu, s.pooledShape, "am");
        const dwUnfused = poisoned(gpu, wShape, "dw unfused");
        await runPlan(gpu, (plan) => {
          conv2dForward(plan, conv, xt, wt, undefined, { ...c, relu: true, outLayout: "nchw", variant });
          maxPool2dForward(plan, y, am, conv, pool);
          maxPool2dBackward(plan, dconv, dyt, am, { ...pool, reluOutput: conv });
          conv2dBackwardWeights(plan, dwUnfused, dconv, xt, { ...c, outLayout: "nchw", variant });
        });
        const name = variant ?? "default";
        assertClose(`pooled bits vs ${name}`, fusedY, new Uint32Array((await readTensor(gpu, y)).buffer), {
          atol: 0,
          rtol: 0,
        });
        assertClose(`argmax vs ${name}`, fusedArg, await readTensorInt(gpu, am), { atol: 0, rtol: 0 });
        assertClose(`dw vs ${name}`, fusedDw, await readTensor(gpu, dwUnfused), WEIGHT_TOL);
      }
    },
  );
}

Deno.test("the fused wrappers reject a wrongly sized tensor, naming it, and an impossible padding", async () => {
  const gpu = await testGpu();
  const o = {
    batch: 2,
    inChannels: 1,
    height: 8,
    width: 8,
    outChannels: 4,
    kernel: 3,
    stride: 1,
    padding: 1,
  };
  const x = poisoned(gpu, [2, 1, 8, 8], "x"), w = poisoned(gpu, [4, 1, 3, 3], "w");
  const pooled = poisoned(gpu, [2, 4, 4, 4], "pooled"), argmax = poisoned(gpu, [2, 4, 4, 4], "argmax");
  const wrong = poisoned(gpu, [2, 4, 4, 3], "stage1 pooled");
  const dw = poisoned(gpu, [4, 1, 3, 3], "dw");
  const plan = new Plan(gpu, "shape checks");
  assertThrows(() => conv2dReluMaxPoolForward(plan, wrong, argmax, x, w, o), TypeError, "stage1 pooled");
  assertThrows(
    () => conv2dReluMaxPoolForward(plan, pooled, argmax, x, w, { ...o, outLayout: "tokens", outChannels: 5 }),
    TypeError,
    "pooled",
  );
  assertThrows(
    () => conv2dReluMaxPoolBackwardWeights(plan, dw, pooled, wrong, pooled, x, o),
    TypeError,
    "stage1",
  );
  assertThrows(
    () => conv2dReluMaxPoolBackwardWeights(plan, dw, pooled, argmax, pooled, w, o),
    TypeError,
    "w",
  );
  assertThrows(() => conv2dReluMaxPoolForward(plan, pooled, argmax, x, w, { ...o, padding: 3 }), RangeError);
  if (plan.length !== 0) throw new Error("a rejected call must not record a dispatch");
  plan.destroy();
});
