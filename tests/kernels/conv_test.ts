import * as ref from "../reference/conv.ts";
import {
  conv2dBackwardBias,
  conv2dBackwardData,
  conv2dBackwardWeights,
  conv2dForward,
  type Conv2dOptions,
  conv2dWeightScratchSize,
  conv2dWeightSplits,
  maxPool2dBackward,
  maxPool2dForward,
  type MaxPool2dOptions,
  nchwToTokens,
  reluBackward,
  tokensToNchw,
} from "../../lib/kernels/conv.ts";
import { readTensorInt } from "../../lib/gpu/tensor.ts";
import { Plan } from "../../lib/gpu/plan.ts";
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

/** Float32 sums of up to ~600 O(1) products (conv) or ~500 terms (gradients) against float64. */
const TOL = { atol: 1e-4, rtol: 1e-4 };

interface ConvCase extends Conv2dOptions {
  title: string;
  relu?: boolean;
  bias?: boolean;
}

const convCases: ConvCase[] = [
  {
    title: "the first CCT layer (1 channel, k3 s1 p1, ReLU) on 13×11",
    batch: 2,
    inChannels: 1,
    height: 13,
    width: 11,
    outChannels: 6,
    kernel: 3,
    stride: 1,
    padding: 1,
    relu: true,
  },
  {
    title: "an RGB k3 conv of batch 1 with 20 channels (a full and a partial block) in tokens layout",
    batch: 1,
    inChannels: 3,
    height: 9,
    width: 9,
    outChannels: 20,
    kernel: 3,
    stride: 1,
    padding: 1,
    outLayout: "tokens",
  },
  {
    title: "a k7 s2 p3 conv (CCT 7x2) on 10×9 with ReLU",
    batch: 3,
    inChannels: 5,
    height: 10,
    width: 9,
    outChannels: 13,
    kernel: 7,
    stride: 2,
    padding: 3,
    relu: true,
  },
  {
    title: "a patch embedding (P4, bias, tokens) on 12×8",
    batch: 2,
    inChannels: 3,
    height: 12,
    width: 8,
    outChannels: 9,
    kernel: 4,
    stride: 4,
    padding: 0,
    outLayout: "tokens",
    bias: true,
  },
  {
    title: "a 64-channel k3 conv (later CCT layers) with ReLU in tokens layout",
    batch: 2,
    inChannels: 64,
    height: 7,
    width: 6,
    outChannels: 12,
    kernel: 3,
    stride: 1,
    padding: 1,
    relu: true,
    outLayout: "tokens",
  },
  {
    title:
      "a 64-channel k3 conv in NCHW whose weight gradient relays dy as tokens (12 channels: a partial block)",
    batch: 1,
    inChannels: 64,
    height: 5,
    width: 6,
    outChannels: 12,
    kernel: 3,
    stride: 1,
    padding: 1,
  },
  {
    // subgroup weight gradient: one channel × 7 tap rows = 7 blocks, one lane idle; 36 = 32 + 4 channels
    title: "a 1→36-channel k7 s2 p3 conv (the CCT 7x1 stem) with ReLU on 11×10",
    batch: 2,
    inChannels: 1,
    height: 11,
    width: 10,
    outChannels: 36,
    kernel: 7,
    stride: 2,
    padding: 3,
    relu: true,
  },
  {
    // subgroup weight gradient: 10 (ci, row) blocks = a full and a partial lane group; 36 = 32 + 4 channels
    title: "a 10→36-channel k3 s2 p1 conv in NCHW on 9×7 (partial lane group and channel block)",
    batch: 2,
    inChannels: 10,
    height: 9,
    width: 7,
    outChannels: 36,
    kernel: 3,
    stride: 2,
    padding: 1,
    relu: true,
  },
  {
    // subgroup weight gradient: k5 one tap row per lane, 20 (ci, row) blocks
    title: "a 4→8-channel k5 s1 p2 conv of batch 1 in tokens layout on 6×5",
    batch: 1,
    inChannels: 4,
    height: 6,
    width: 5,
    outChannels: 8,
    kernel: 5,
    stride: 1,
    padding: 2,
    outLayout: "tokens",
  },
  {
    title: "an awkward k2 s3 p1 conv with bias and 3 output channels",
    batch: 1,
    inChannels: 2,
    height: 6,
    width: 7,
    outChannels: 3,
    kernel: 2,
    stride: 3,
    padding: 1,
    bias: true,
  },
];

function outDims(c: Conv2dOptions) {
  const oh = ref.outputSize(c.height, c.kernel, c.stride, c.padding);
  const ow = ref.outputSize(c.width, c.kernel, c.stride, c.padding);
  const shape = c.outLayout === "tokens"
    ? [c.batch, oh * ow, c.outChannels]
    : [c.batch, c.outChannels, oh, ow];
  return { oh, ow, shape };
}

/** Reference NCHW data in the case's output layout. */
function inLayout(c: Conv2dOptions, nchw: Float64Array): Float64Array {
  return c.outLayout === "tokens" ? ref.nchwToTokens(nchw, c.batch, c.outChannels) : nchw;
}

for (const variant of ["subgroupGemm", "subgroup", "blocked", "naive"] as const) {
  const needsSubgroups = variant.startsWith("subgroup");
  const refused = needsSubgroups ? " (or, without subgroups of width 8, are refused)" : "";
  for (const [i, c] of convCases.entries()) {
    Deno.test(`conv2d ${variant} forward and backward match the reference for ${c.title}${refused}`, async () => {
      const gpu = await testGpu();
      const o = { ...c, variant };
      if (needsSubgroups && !(gpu.hasSubgroups && gpu.subgroupSize === 8)) {
        const plan = new Plan(gpu, "refused");
        const x = poisoned(gpu, [c.batch, c.inChannels, c.height, c.width], "x");
        const w = poisoned(gpu, [c.outChannels, c.inChannels, c.kernel, c.kernel], "w");
        try {
          conv2dForward(plan, poisoned(gpu, outDims(c).shape), x, w, undefined, o);
        } catch (e) {
          if (e instanceof RangeError) return;
          throw e;
        }
        throw new Error("the subgroup variant was accepted on an adapter without subgroups");
      }
      const { shape } = outDims(c);
      const xShape = [c.batch, c.inChannels, c.height, c.width];
      const wShape = [c.outChannels, c.inChannels, c.kernel, c.kernel];
      const nx = xShape.reduce((a, b) => a * b), nw = wShape.reduce((a, b) => a * b);
      const ny = shape.reduce((a, b) => a * b);
      const x = randn(nx, 100 + i), w = randn(nw, 200 + i, 0.5), bias = randn(c.outChannels, 300 + i);
      const dyNchw = randn(ny, 400 + i), dwBase = randn(nw, 500 + i), dbBase = randn(c.outChannels, 600 + i);
      const dy = inLayout(c, dyNchw);

      const y = poisoned(gpu, shape, "y"), dx = poisoned(gpu, xShape, "dx");
      const dw = upload(gpu, dwBase, wShape, "dw"), db = upload(gpu, dbBase, [c.outChannels], "db");
      const xt = upload(gpu, x, xShape, "x"), wt = upload(gpu, w, wShape, "w");
      const dyt = upload(gpu, dy, shape, "dy");
      await runPlan(gpu, (plan) => {
        conv2dForward(plan, y, xt, wt, c.bias ? upload(gpu, bias, [c.outChannels], "bias") : undefined, o);
        conv2dBackwardData(plan, dx, dyt, wt, o);
        conv2dBackwardWeights(plan, dw, dyt, xt, { ...o, accumulate: true });
        conv2dBackwardBias(plan, db, dyt, { ...o, accumulate: true });
      });

      let yRef = ref.conv2dForward(x, w, c.bias ? bias : undefined, c);
      if (c.relu) yRef = ref.relu(yRef);
      await expectTensor(gpu, "y", y, inLayout(c, yRef), TOL);
      await expectTensor(gpu, "dx", dx, ref.conv2dBackwardData(dyNchw, w, c), TOL);
      const dwRef = ref.conv2dBackwardWeights(dyNchw, x, c).map((v, j) => v + dwBase[j]);
      await expectTensor(gpu, "dw (accumulated)", dw, dwRef, TOL);
      const dbRef = ref.conv2dBackwardBias(dyNchw, c).map((v, j) => v + dbBase[j]);
      await expectTensor(gpu, "db (accumulated)", db, dbRef, TOL);
    });
  }
}

Deno.test(
  "the subgroupGemm conv2d with other tiles (16 pixels × 8 channels per lane unrolled by 2, and 8 × 4) matches the reference (or, without subgroups of width 8, is refused)",
  async () => {
    const gpu = await testGpu();
    if (!(gpu.hasSubgroups && gpu.subgroupSize === 8)) {
      const c = {
        batch: 1,
        inChannels: 16,
        height: 7,
        width: 5,
        outChannels: 20,
        kernel: 3,
        stride: 1,
        padding: 1,
      };
      const x = poisoned(gpu, [1, 16, 7, 5], "x"), w = poisoned(gpu, [20, 16, 3, 3], "w");
      const o = { ...c, variant: "subgroupGemm" as const, gemmTile: { pixels: 16, channels: 8, unroll: 2 } };
      try {
        conv2dForward(new Plan(gpu, "refused"), poisoned(gpu, outDims(c).shape), x, w, undefined, o);
      } catch (e) {
        if (e instanceof RangeError) return;
        throw e;
      }
      throw new Error("the subgroupGemm variant was accepted on an adapter without subgroups of width 8");
    }
    // 16→20 channels: 4 reduction vec4s (unrolled by 2; dy's 5 are not), a partial channel block; 6→8 s2: 2
    // vec4s, the second partial (clamped weight rows), and a tokens dy of 8 channels read without a copy.
    const cases = [
      { batch: 2, inChannels: 16, height: 7, width: 5, outChannels: 20, kernel: 3, stride: 1, padding: 1 },
      {
        batch: 1,
        inChannels: 6,
        height: 6,
        width: 9,
        outChannels: 8,
        kernel: 3,
        stride: 2,
        padding: 1,
        outLayout: "tokens" as const,
      },
    ];
    for (const [i, c] of cases.entries()) {
      for (
        const gemmTile of [{ pixels: 16, channels: 8, unroll: 2 }, { pixels: 8, channels: 4, unroll: 1 }]
      ) {
        const o = { ...c, variant: "subgroupGemm" as const, gemmTile };
        const { shape } = outDims(c);
        const xShape = [c.batch, c.inChannels, c.height, c.width];
        const wShape = [c.outChannels, c.inChannels, 3, 3];
        const x = randn(xShape.reduce((a, b) => a * b), 900 + i),
          w = randn(wShape.reduce((a, b) => a * b), 910 + i);
        const bias = randn(c.outChannels, 920 + i), dyNchw = randn(shape.reduce((a, b) => a * b), 930 + i);
        const dxBase = randn(x.length, 940 + i);
        const y = poisoned(gpu, shape, "y"), dx = upload(gpu, dxBase, xShape, "dx");
        const xt = upload(gpu, x, xShape, "x"), wt = upload(gpu, w, wShape, "w");
        const bt = upload(gpu, bias, [c.outChannels], "bias"),
          dyt = upload(gpu, inLayout(c, dyNchw), shape, "dy");
        await runPlan(gpu, (plan) => {
          conv2dForward(plan, y, xt, wt, bt, { ...o, relu: true });
          conv2dBackwardData(plan, dx, dyt, wt, { ...o, accumulate: true });
        });
        const label = `${c.inChannels}→${c.outChannels} tile ${gemmTile.pixels}×${gemmTile.channels}`;
        await expectTensor(
          gpu,
          `y (${label})`,
          y,
          inLayout(c, ref.relu(ref.conv2dForward(x, w, bias, c))),
          TOL,
        );
        const dxRef = ref.conv2dBackwardData(dyNchw, w, c).map((v, j) => v + dxBase[j]);
        await expectTensor(gpu, `dx accumulated (${label})`, dx, dxRef, TOL);
      }
    }
  },
);

Deno.test("reference conv2d backward (data, weights, bias) matches finite differences", () => {
  const o = {
    batch: 2,
    inChannels: 2,
    height: 5,
    width: 6,
    outChannels: 3,
    kernel: 3,
    stride: 2,
    padding: 1,
  };
  const { shape } = outDims(o);
  const x = randn(2 * 2 * 5 * 6, 1), w = randn(3 * 2 * 9, 2), b = randn(3, 3);
  const probe = randn(shape.reduce((a, v) => a * v), 4);
  checkGradients(
    "conv2d",
    ([x, w, b]) => dot(ref.conv2dForward(x, w, b, o), probe),
    [x, w, b],
    [
      ref.conv2dBackwardData(probe, w, o),
      ref.conv2dBackwardWeights(probe, x, o),
      ref.conv2dBackwardBias(probe, o),
    ],
  );
});

Deno.test("reference max-pool backward with the ReLU mask matches finite differences", () => {
  const o = { batch: 2, channels: 2, height: 7, width: 6, kernel: 3, stride: 2, padding: 1 };
  const x = randn(2 * 2 * 7 * 6, 5);
  const { argmax } = ref.maxPool2dForward(ref.relu(x), o);
  const probe = randn(argmax.length, 6);
  const grad = ref.reluBackward(ref.maxPool2dBackward(probe, argmax, o), ref.relu(x));
  checkGradients("relu ▸ maxpool", ([x]) => dot(ref.maxPool2dForward(ref.relu(x), o).y, probe), [x], [grad], {
    samples: 84,
  });
});

// 12 channels: a partial last channel block (the 1-channel layer keeps NCHW dy: too shallow to relay)
Deno.test("conv2dBackwardWeights gives the same sums unsplit, split unevenly and split by default", async () => {
  const gpu = await testGpu();
  const o = {
    batch: 3,
    inChannels: 1,
    height: 20,
    width: 17,
    outChannels: 12,
    kernel: 3,
    stride: 1,
    padding: 1,
  };
  const { shape } = outDims(o);
  const nw = 12 * 9;
  const x = randn(3 * 20 * 17, 11), dy = randn(shape.reduce((a, b) => a * b), 12);
  const xt = upload(gpu, x, [3, 1, 20, 17]), dyt = upload(gpu, dy, shape);
  const expected = ref.conv2dBackwardWeights(dy, x, o);
  const auto = conv2dWeightSplits(o);
  if (auto < 2) throw new Error(`expected the default to split a 1-channel layer, got ${auto}`);
  for (const splits of [1, 7, undefined]) {
    const dw = poisoned(gpu, [12, 1, 3, 3], "dw");
    const scratch = splits === 7
      ? poisoned(gpu, [conv2dWeightScratchSize({ ...o, splits })], "scratch")
      : undefined;
    await runPlan(gpu, (plan) => conv2dBackwardWeights(plan, dw, dyt, xt, { ...o, splits, scratch }));
    await expectTensor(gpu, `dw (splits ${splits ?? `default ${auto}`})`, dw, expected, TOL);
  }
  if (conv2dWeightScratchSize({ ...o, splits: 1 }) !== 0) {
    throw new Error("an unsplit reduction needs no scratch");
  }
  assertClose("scratch size", [conv2dWeightScratchSize({ ...o, splits: 7 })], [7 * nw], { atol: 0, rtol: 0 });
});

Deno.test(
  "the subgroup conv2dBackwardWeights gives the same sums unsplit, split unevenly and split by default (where subgroups exist)",
  async () => {
    const gpu = await testGpu();
    if (!(gpu.hasSubgroups && gpu.subgroupSize === 8)) return;
    const o = {
      batch: 3,
      inChannels: 9,
      height: 11,
      width: 10,
      outChannels: 20,
      kernel: 3,
      stride: 1,
      padding: 1,
      variant: "subgroup" as const,
    };
    const { shape } = outDims(o);
    const x = randn(3 * 9 * 110, 13), dy = randn(shape.reduce((a, b) => a * b), 14);
    const xt = upload(gpu, x, [3, 9, 11, 10]), dyt = upload(gpu, dy, shape);
    const expected = ref.conv2dBackwardWeights(dy, x, o);
    const auto = conv2dWeightSplits(o, gpu);
    if (auto < 2) throw new Error(`expected the default to split, got ${auto}`);
    for (const splits of [1, 5, undefined]) {
      const dw = poisoned(gpu, [20, 9, 3, 3], "dw");
      await runPlan(gpu, (plan) => conv2dBackwardWeights(plan, dw, dyt, xt, { ...o, splits }));
      await expectTensor(gpu, `dw (splits ${splits ?? `default ${auto}`})`, dw, expected, TOL);
    }
  },
);

Deno.test(
  "a one-channel 7×7 stride-2 stem's weight gradient runs the subgroup kernel by default where subgroups exist, and matches the reference",
  async () => {
    const gpu = await testGpu();
    const o = {
      batch: 2,
      inChannels: 1,
      height: 13,
      width: 12,
      outChannels: 40,
      kernel: 7,
      stride: 2,
      padding: 3,
    };
    const { shape } = outDims(o);
    const x = randn(2 * 13 * 12, 15), dy = randn(shape.reduce((a, b) => a * b), 16);
    const xt = upload(gpu, x, [2, 1, 13, 12]), dyt = upload(gpu, dy, shape);
    const dw = poisoned(gpu, [40, 1, 7, 7], "dw");
    let names: string[] = [];
    await runPlan(gpu, (plan) => {
      conv2dBackwardWeights(plan, dw, dyt, xt, o);
      names = plan.kernelNames;
    });
    await expectTensor(gpu, "dw", dw, ref.conv2dBackwardWeights(dy, x, o), TOL);
    const subgroup = names.some((n) => n.startsWith("conv2dBackwardWeightsSubgroup"));
    if (subgroup !== (gpu.hasSubgroups && gpu.subgroupSize === 8)) {
      throw new Error(`unexpected kernels for the 7×7 stem on ${gpu.description}: ${names.join(", ")}`);
    }
  },
);

interface PoolCase extends MaxPool2dOptions {
  title: string;
  reluMask: boolean;
}

const poolCases: PoolCase[] = [
  {
    title: "the CCT pool (k3 s2 p1) on odd 9×7 ReLU outputs with the fused ReLU mask",
    batch: 2,
    channels: 3,
    height: 9,
    width: 7,
    kernel: 3,
    stride: 2,
    padding: 1,
    reluMask: true,
  },
  {
    title: "the CCT pool writing tokens for batch 1",
    batch: 1,
    channels: 5,
    height: 8,
    width: 8,
    kernel: 3,
    stride: 2,
    padding: 1,
    outLayout: "tokens",
    reluMask: false,
  },
  {
    title: "a k2 s2 p0 pool that drops the last row and column",
    batch: 2,
    channels: 2,
    height: 5,
    width: 5,
    kernel: 2,
    stride: 2,
    padding: 0,
    reluMask: false,
  },
  {
    // rows of 28 load as vec4s; 14 outputs per row = a block of 8 and a partial one
    title: "the CCT pool on 5×28 rows loaded as vec4s with a partial output block",
    batch: 1,
    channels: 3,
    height: 5,
    width: 28,
    kernel: 3,
    stride: 2,
    padding: 1,
    reluMask: true,
  },
  {
    // rows of 14 load as vec2s
    title: "the CCT pool on 7×14 rows loaded as vec2s writing tokens",
    batch: 2,
    channels: 3,
    height: 7,
    width: 14,
    kernel: 3,
    stride: 2,
    padding: 1,
    outLayout: "tokens",
    reluMask: false,
  },
  {
    // 11 outputs and 12 cells per row: the blocked kernels' row blocks end part-way
    title: "an overlapping k3 s1 p1 pool on 5×11 ReLU outputs to tokens with the ReLU mask",
    batch: 1,
    channels: 3,
    height: 5,
    width: 11,
    kernel: 3,
    stride: 1,
    padding: 1,
    outLayout: "tokens",
    reluMask: true,
  },
  {
    // stride > kernel: some inputs are in no window (gradient 0); 11 outputs and cells per row
    title: "a k2 s3 p1 pool on 4×31 that skips inputs",
    batch: 2,
    channels: 2,
    height: 4,
    width: 31,
    kernel: 2,
    stride: 3,
    padding: 1,
    reluMask: false,
  },
];

for (const variant of ["blocked", "naive"] as const) {
  for (const [i, c] of poolCases.entries()) {
    Deno.test(`maxPool2d ${variant} forward (with argmax) and backward match the reference for ${c.title}`, async () => {
      const gpu = await testGpu();
      const oh = ref.outputSize(c.height, c.kernel, c.stride, c.padding);
      const ow = ref.outputSize(c.width, c.kernel, c.stride, c.padding);
      const xShape = [c.batch, c.channels, c.height, c.width];
      const outShape = c.outLayout === "tokens"
        ? [c.batch, oh * ow, c.channels]
        : [c.batch, c.channels, oh, ow];
      const nx = xShape.reduce((a, b) => a * b), ny = outShape.reduce((a, b) => a * b);
      // ReLU outputs have many zeros: ties must resolve as in the reference (first in scan order).
      const raw = randn(nx, 700 + i);
      const x = c.reluMask ? ref.relu(raw) : raw;
      const dyNchw = randn(ny, 800 + i);
      const tokens = c.outLayout === "tokens";
      const dy = tokens ? ref.nchwToTokens(dyNchw, c.batch, c.channels) : dyNchw;

      const y = poisoned(gpu, outShape, "y"), argmax = poisoned(gpu, outShape, "argmax");
      const dx = poisoned(gpu, xShape, "dx");
      const xt = upload(gpu, x, xShape, "x");
      await runPlan(gpu, (plan) => {
        maxPool2dForward(plan, y, argmax, xt, { ...c, variant });
        maxPool2dBackward(plan, dx, upload(gpu, dy, outShape, "dy"), argmax, {
          ...c,
          variant,
          reluOutput: c.reluMask ? xt : undefined,
        });
      });

      const expected = ref.maxPool2dForward(x, c);
      await expectTensor(
        gpu,
        "y",
        y,
        tokens ? ref.nchwToTokens(expected.y, c.batch, c.channels) : expected.y,
        {
          atol: 0,
          rtol: 0,
        },
      );
      const am = tokens ? ref.nchwToTokens(expected.argmax, c.batch, c.channels) : expected.argmax;
      assertClose("argmax", await readTensorInt(gpu, argmax), am, { atol: 0, rtol: 0 });
      let dxRef = ref.maxPool2dBackward(dyNchw, expected.argmax, c);
      if (c.reluMask) dxRef = ref.reluBackward(dxRef, x);
      await expectTensor(gpu, "dx", dx, dxRef, { atol: 1e-6, rtol: 1e-6 });
    });
  }
}

Deno.test("a CCT tokenizer block (conv ▸ ReLU ▸ pool to tokens) runs forward and backward in one plan", async () => {
  const gpu = await testGpu();
  const conv = {
    batch: 2,
    inChannels: 3,
    height: 10,
    width: 10,
    outChannels: 8,
    kernel: 3,
    stride: 1,
    padding: 1,
  };
  const pool = { batch: 2, channels: 8, height: 10, width: 10, kernel: 3, stride: 2, padding: 1 };
  const x = randn(2 * 3 * 100, 31), w = randn(8 * 3 * 9, 32, 0.3), dTokens = randn(2 * 25 * 8, 33);
  const xt = upload(gpu, x, [2, 3, 10, 10]), wt = upload(gpu, w, [8, 3, 3, 3]);
  const a = poisoned(gpu, [2, 8, 10, 10], "relu out"), tokens = poisoned(gpu, [2, 25, 8], "tokens");
  const argmax = poisoned(gpu, [2, 25, 8], "argmax"), da = poisoned(gpu, [2, 8, 10, 10], "da");
  const dw = poisoned(gpu, [8, 3, 3, 3], "dw");
  await runPlan(gpu, (plan) => {
    conv2dForward(plan, a, xt, wt, undefined, { ...conv, relu: true });
    maxPool2dForward(plan, tokens, argmax, a, { ...pool, outLayout: "tokens" });
    maxPool2dBackward(plan, da, upload(gpu, dTokens, [2, 25, 8]), argmax, {
      ...pool,
      outLayout: "tokens",
      reluOutput: a,
    });
    conv2dBackwardWeights(plan, dw, da, xt, conv);
  });
  const aRef = ref.relu(ref.conv2dForward(x, w, undefined, conv));
  const pooled = ref.maxPool2dForward(aRef, pool);
  await expectTensor(gpu, "tokens", tokens, ref.nchwToTokens(pooled.y, 2, 8), TOL);
  const daRef = ref.reluBackward(
    ref.maxPool2dBackward(ref.tokensToNchw(dTokens, 2, 8), pooled.argmax, pool),
    aRef,
  );
  await expectTensor(gpu, "d(conv out)", da, daRef, TOL);
  await expectTensor(gpu, "dw", dw, ref.conv2dBackwardWeights(daRef, x, conv), TOL);
});

Deno.test("reluBackward, nchwToTokens and tokensToNchw match the reference", async () => {
  const gpu = await testGpu();
  const o = { batch: 3, channels: 5, height: 3, width: 7 };
  const n = 3 * 5 * 21;
  const x = randn(n, 41), dy = randn(n, 42), base = randn(n, 43);
  const y = ref.relu(x);
  const xt = upload(gpu, x, [3, 5, 3, 7]);
  const dx = poisoned(gpu, [n], "dx"), dxAcc = upload(gpu, base, [n], "dx acc");
  const tok = poisoned(gpu, [3, 21, 5], "tokens"), back = poisoned(gpu, [3, 5, 3, 7], "back");
  await runPlan(gpu, (plan) => {
    const yt = upload(gpu, y, [n]), dyt = upload(gpu, dy, [n]);
    reluBackward(plan, dx, dyt, yt);
    reluBackward(plan, dxAcc, dyt, yt, true);
    nchwToTokens(plan, tok, xt, o);
    tokensToNchw(plan, back, tok, o);
  });
  const g = ref.reluBackward(dy, y);
  await expectTensor(gpu, "relu dx", dx, g, { atol: 0, rtol: 0 });
  await expectTensor(gpu, "relu dx (accumulate)", dxAcc, g.map((v, i) => v + base[i]), {
    atol: 0,
    rtol: 1e-7,
  });
  await expectTensor(gpu, "tokens", tok, ref.nchwToTokens(x, 3, 5), { atol: 0, rtol: 0 });
  await expectTensor(gpu, "round trip", back, x, { atol: 0, rtol: 0 });
});

Deno.test("conv wrappers reject a wrongly sized tensor, naming it, and an impossible padding", async () => {
  const gpu = await testGpu();
  const o = {
    batch: 2,
    inChannels: 3,
    height: 8,
    width: 8,
    outChannels: 4,
    kernel: 3,
    stride: 1,
    padding: 1,
  };
  const x = poisoned(gpu, [2, 3, 8, 8], "x"), w = poisoned(gpu, [4, 3, 3, 3], "w");
  const wrongY = poisoned(gpu, [2, 4, 8, 7], "conv1 output");
  const plan = new Plan(gpu, "shape checks");
  const thrown = (f: () => void) => {
    try {
      f();
    } catch (e) {
      return e as Error;
    }
    throw new Error("expected an exception");
  };
  const shapeError = thrown(() => conv2dForward(plan, wrongY, x, w, undefined, o));
  if (!(shapeError instanceof TypeError) || !shapeError.message.includes("conv1 output")) throw shapeError;
  const padError = thrown(() => conv2dForward(plan, wrongY, x, w, undefined, { ...o, padding: 3 }));
  if (!(padError instanceof RangeError)) throw padError;
  if (plan.length !== 0) throw new Error("a rejected call must not record a dispatch");
});
