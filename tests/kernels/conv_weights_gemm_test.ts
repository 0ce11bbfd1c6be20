/**
 * The implicit-GEMM ("subgroupGemm") conv2d weight gradient: against the float64 reference on awkward shapes,
 * with several tiles, split and unsplit, accumulating and overwriting; refused without subgroups of width 8.
 */
import * as ref from "../reference/conv.ts";
import {
  conv2dBackwardData,
  conv2dBackwardWeights,
  type Conv2dOptions,
  conv2dWeightScratchSize,
  conv2dWeightSplits,
  convChannelsLastSize,
  prepareConvGradient,
  type WeightGemmTile,
} from "../../lib/kernels/conv.ts";
import { Plan } from "../../lib/gpu/plan.ts";
import { assertEquals, expectTensor, poisoned, randn, runPlan, testGpu, upload } from "../support/check.ts";

/** Float32 sums of up to a few hundred O(1) products against float64. */
const TOL = { atol: 1e-4, rtol: 1e-4 };

interface Case extends Conv2dOptions {
  title: string;
}

const cases: Case[] = [
  {
    title: "5→7 channels (neither 4·n) k3 s2 p1 on odd 9×7, batch 1, NCHW dy",
    batch: 1,
    inChannels: 5,
    height: 9,
    width: 7,
    outChannels: 7,
    kernel: 3,
    stride: 2,
    padding: 1,
  },
  {
    title: "10→36 channels k3 s1 p1 on 11×9, tokens dy read as it is",
    batch: 2,
    inChannels: 10,
    height: 11,
    width: 9,
    outChannels: 36,
    kernel: 3,
    stride: 1,
    padding: 1,
    outLayout: "tokens",
  },
  {
    title: "6→10 channels k2 s1 p0 on 7×5, tokens dy with C_out not 4·n (copied)",
    batch: 3,
    inChannels: 6,
    height: 7,
    width: 5,
    outChannels: 10,
    kernel: 2,
    stride: 1,
    padding: 0,
    outLayout: "tokens",
  },
  {
    title: "12→20 channels k5 s1 p2 on 6×8",
    batch: 2,
    inChannels: 12,
    height: 6,
    width: 8,
    outChannels: 20,
    kernel: 5,
    stride: 1,
    padding: 2,
  },
  {
    title: "9→4 channels k1 s1 p0 on 5×3 (a pointwise conv)",
    batch: 2,
    inChannels: 9,
    height: 5,
    width: 3,
    outChannels: 4,
    kernel: 1,
    stride: 1,
    padding: 0,
  },
  {
    title: "64→68 channels k3 s2 p0 on 8×9 (two output-channel blocks, the second partial)",
    batch: 1,
    inChannels: 64,
    height: 8,
    width: 9,
    outChannels: 68,
    kernel: 3,
    stride: 2,
    padding: 0,
  },
];

function dyShape(c: Conv2dOptions): number[] {
  const oh = ref.outputSize(c.height, c.kernel, c.stride, c.padding);
  const ow = ref.outputSize(c.width, c.kernel, c.stride, c.padding);
  return c.outLayout === "tokens" ? [c.batch, oh * ow, c.outChannels] : [c.batch, c.outChannels, oh, ow];
}

const subgroups8 = async () => {
  const gpu = await testGpu();
  return { gpu, ok: gpu.hasSubgroups && gpu.subgroupSize === 8 };
};

/** Runs the weight gradient of `c` with `tile` for each split mode and checks it against the reference. */
async function checkCase(c: Case, i: number, tile: WeightGemmTile | undefined): Promise<void> {
  const { gpu } = await subgroups8();
  const xShape = [c.batch, c.inChannels, c.height, c.width];
  const wShape = [c.outChannels, c.inChannels, c.kernel, c.kernel];
  const shape = dyShape(c);
  const x = randn(xShape.reduce((a, b) => a * b), 1000 + i);
  const dyNchw = randn(shape.reduce((a, b) => a * b), 1100 + i);
  const dy = c.outLayout === "tokens" ? ref.nchwToTokens(dyNchw, c.batch, c.outChannels) : dyNchw;
  const base = randn(wShape.reduce((a, b) => a * b), 1200 + i);
  const xt = upload(gpu, x, xShape, "x"), dyt = upload(gpu, dy, shape, "dy");
  const expected = ref.conv2dBackwardWeights(dyNchw, x, c);
  const o = { ...c, variant: "subgroupGemm" as const, weightTile: tile };
  const auto = conv2dWeightSplits(o, gpu);
  // Unsplit and accumulating; split in 3 overwriting (poisoned scratch); the default split, accumulating.
  for (const [splits, accumulate] of [[1, true], [3, false], [undefined, true]] as const) {
    const dw = accumulate ? upload(gpu, base, wShape, "dw") : poisoned(gpu, wShape, "dw");
    const scratch = splits === 3
      ? poisoned(gpu, [conv2dWeightScratchSize({ ...o, splits }, gpu)], "scratch")
      : undefined;
    await runPlan(
      gpu,
      (plan) => conv2dBackwardWeights(plan, dw, dyt, xt, { ...o, splits, scratch, accumulate }),
    );
    const want = accumulate ? expected.map((v, j) => v + base[j]) : expected;
    const label = `dw (tile ${JSON.stringify(tile ?? "default")}, splits ${splits ?? `default ${auto}`}${
      accumulate ? ", accumulated" : ""
    })`;
    await expectTensor(gpu, label, dw, want, TOL);
  }
}

// The default tile (128 accumulators per lane) compiles slowly: three cases; cheaper tiles cover the rest.
for (const i of [0, 1, 5]) {
  Deno.test(
    `the subgroupGemm weight gradient with the default tile matches the reference for ${
      cases[i].title
    }, split or not (where subgroups of width 8 exist)`,
    async () => {
      if (!(await subgroups8()).ok) return;
      await checkCase(cases[i], i, undefined);
    },
  );
}

const otherTiles: [WeightGemmTile, number[]][] = [
  [{ channels: 32, columns: 1, unroll: 1 }, [2, 3, 4]],
  [{ channels: 32, columns: 2, unroll: 2 }, [0, 3]],
  // The sliding-window row kernel (stride 1 only: case 0 falls back to the general kernel).
  [{ channels: 32, columns: 1, unroll: 1, row: true }, [0, 1, 2, 3]],
];

for (const [tile, which] of otherTiles) {
  const name = `${tile.channels} channels × ${tile.columns} columns unrolled ${tile.unroll}${
    tile.row ? " (row)" : ""
  }`;
  Deno.test(
    `the subgroupGemm weight gradient with the tile ${name} matches the reference on k1, k2, k3 and k5 cases (where subgroups of width 8 exist)`,
    async () => {
      if (!(await subgroups8()).ok) return;
      for (const i of which) await checkCase(cases[i], i, tile);
    },
  );
}

Deno.test(
  "without subgroups of width 8 the subgroupGemm weight gradient is refused and the default falls back to the blocked kernel",
  async () => {
    const { gpu, ok } = await subgroups8();
    if (ok) return;
    const c = cases[1];
    const xShape = [c.batch, c.inChannels, c.height, c.width];
    const wShape = [c.outChannels, c.inChannels, c.kernel, c.kernel];
    const shape = dyShape(c);
    const x = randn(xShape.reduce((a, b) => a * b), 21), dyNchw = randn(shape.reduce((a, b) => a * b), 22);
    const xt = upload(gpu, x, xShape, "x");
    const dyt = upload(gpu, ref.nchwToTokens(dyNchw, c.batch, c.outChannels), shape, "dy");
    const dw = poisoned(gpu, wShape, "dw");
    let refused = false;
    try {
      conv2dBackwardWeights(new Plan(gpu, "refused"), dw, dyt, xt, { ...c, variant: "subgroupGemm" });
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      refused = true;
    }
    if (!refused) throw new Error("the subgroupGemm weight gradient was accepted without subgroups");
    await runPlan(gpu, (plan) => conv2dBackwardWeights(plan, dw, dyt, xt, c));
    await expectTensor(gpu, "dw (default variant)", dw, ref.conv2dBackwardWeights(dyNchw, x, c), TOL);
  },
);

Deno.test(
  "one prepared channels-last dy serves both the weight gradient and backward-data, on every adapter",
  async () => {
    const gpu = await testGpu();
    for (const [i, c] of [cases[0], cases[3], cases[2]].entries()) {
      const xShape = [c.batch, c.inChannels, c.height, c.width];
      const wShape = [c.outChannels, c.inChannels, c.kernel, c.kernel];
      const shape = dyShape(c);
      const x = randn(xShape.reduce((a, b) => a * b), 30 + i),
        w = randn(wShape.reduce((a, b) => a * b), 40 + i);
      const dyNchw = randn(shape.reduce((a, b) => a * b), 50 + i);
      const dy = c.outLayout === "tokens" ? ref.nchwToTokens(dyNchw, c.batch, c.outChannels) : dyNchw;
      const xt = upload(gpu, x, xShape, "x"),
        wt = upload(gpu, w, wShape, "w"),
        dyt = upload(gpu, dy, shape, "dy");
      const dw = poisoned(gpu, wShape, "dw"), dx = poisoned(gpu, xShape, "dx");
      const oh = ref.outputSize(c.height, c.kernel, c.stride, c.padding);
      const ow = ref.outputSize(c.width, c.kernel, c.stride, c.padding);
      const scratch = poisoned(
        gpu,
        [convChannelsLastSize(c.batch, c.outChannels, oh * ow)],
        "dyChannelsLast",
      );
      // dy's relayouts in a plan (x's, for the weight gradient, is named after its input; C_out = 4·n NCHW dy
      // goes to tokens under the name "dyTokens").
      const dyCopies = (plan: Plan) =>
        plan.kernelNames.filter((n) => /channelsLast|dyTokens/.test(n) && !n.includes("input")).length;
      // The same two backwards without sharing: how many copies they make on this adapter on their own.
      const alone = new Plan(gpu, "unshared");
      conv2dBackwardWeights(alone, poisoned(gpu, wShape), dyt, xt, c);
      conv2dBackwardData(alone, poisoned(gpu, xShape), dyt, wt, c);
      const unshared = dyCopies(alone);
      let copies = 0;
      await runPlan(gpu, (plan) => {
        const prepared = prepareConvGradient(plan, dyt, c, scratch);
        conv2dBackwardWeights(plan, dw, dyt, xt, { ...c, preparedDy: prepared });
        conv2dBackwardData(plan, dx, dyt, wt, { ...c, preparedDy: prepared });
        copies = dyCopies(plan);
      });
      // Whatever needed a copy alone gets exactly one between them.
      assertEquals(copies, Math.min(unshared, 1), `dy copies for ${c.title} (${unshared} unshared)`);
      await expectTensor(gpu, `dw (${c.title})`, dw, ref.conv2dBackwardWeights(dyNchw, x, c), TOL);
      await expectTensor(gpu, `dx (${c.title})`, dx, ref.conv2dBackwardData(dyNchw, w, c), TOL);
    }
  },
);
