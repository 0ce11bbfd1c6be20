import * as ref from "../reference/conv.ts";
import { winogradMatrices } from "../../shaders/winograd.ts";
import {
  conv2dWinograd,
  type Conv2dWinogradOptions,
  winogradFits,
  winogradScratchSizes,
} from "../../lib/kernels/winograd.ts";
import { conv2dBackwardData, conv2dForward } from "../../lib/kernels/conv.ts";
import { Plan } from "../../lib/gpu/plan.ts";
import {
  assertClose,
  assertThrows,
  expectTensor,
  poisoned,
  randn,
  rng,
  runPlan,
  testGpu,
  upload,
} from "../support/check.ts";

/** float32 transforms and products against float64 sums of C·9 O(1) products (F(4×4) passes this too). */
const TOL = { atol: 1e-4, rtol: 1e-4 };

Deno.test("Winograd F(m, 3) matrices reproduce the 1-D correlation exactly in float64", () => {
  for (const m of [2, 4] as const) {
    const { bt, g, at } = winogradMatrices(m);
    const a = m + 2;
    const u = rng(17 + m);
    for (let trial = 0; trial < 5; trial++) {
      const d = Array.from({ length: a }, () => u() * 2 - 1);
      const f = Array.from({ length: 3 }, () => u() * 2 - 1);
      const gf = g.map((row) => row.reduce((s, c, j) => s + c * f[j], 0));
      const btd = bt.map((row) => row.reduce((s, c, j) => s + c * d[j], 0));
      const prod = gf.map((v, i) => v * btd[i]);
      const y = at.map((row) => row.reduce((s, c, j) => s + c * prod[j], 0));
      const direct = Array.from({ length: m }, (_, i) => d[i] * f[0] + d[i + 1] * f[1] + d[i + 2] * f[2]);
      assertClose(`F(${m}, 3) trial ${trial}`, y, direct, { atol: 1e-12, rtol: 1e-12 });
    }
  }
});

/** A conv of the sizes the wrapper takes, with a bias and ReLU to add in the forward. */
type WinogradCase =
  & Omit<Conv2dWinogradOptions, "pass" | "bias" | "relu" | "accumulate" | "tile" | "scratch">
  & {
    title: string;
    bias?: boolean;
    relu?: boolean;
  };

// Odd maps leave partial tiles (edge outputs dropped, edge inputs zero); channel counts of 4·n take the vec4
// transforms, the others the scalar ones; the tiny matmuls run the batched product's edge paths.
const cases: WinogradCase[] = [
  {
    title: "CCT conv2's shape, scaled down: 16→24 channels on 14×14, padding 1, ReLU",
    batch: 2,
    inChannels: 16,
    height: 14,
    width: 14,
    outChannels: 24,
    padding: 1,
    relu: true,
  },
  {
    title: "5→7 channels on 7×9 with bias, padding 1",
    batch: 3,
    inChannels: 5,
    height: 7,
    width: 9,
    outChannels: 7,
    padding: 1,
    bias: true,
  },
  {
    title: "13→6 channels on 6×5, padding 0 (a 4×3 output), tokens layout",
    batch: 1,
    inChannels: 13,
    height: 6,
    width: 5,
    outChannels: 6,
    padding: 0,
    outLayout: "tokens",
  },
  {
    title: "8→12 channels on 7×6, padding 1, tokens layout (vec4 loads and stores of tokens)",
    batch: 2,
    inChannels: 8,
    height: 7,
    width: 6,
    outChannels: 12,
    padding: 1,
    outLayout: "tokens",
    bias: true,
  },
  {
    title: "3→9 channels on 5×6, padding 2 (a 7×8 output), bias and ReLU",
    batch: 2,
    inChannels: 3,
    height: 5,
    width: 6,
    outChannels: 9,
    padding: 2,
    bias: true,
    relu: true,
  },
];

function shapes(c: WinogradCase) {
  const oh = c.height + 2 * c.padding - 2, ow = c.width + 2 * c.padding - 2;
  const xShape = [c.batch, c.inChannels, c.height, c.width];
  const yShape = c.outLayout === "tokens"
    ? [c.batch, oh * ow, c.outChannels]
    : [c.batch, c.outChannels, oh, ow];
  const wShape = [c.outChannels, c.inChannels, 3, 3];
  return { xShape, yShape, wShape, size: (s: number[]) => s.reduce((a, b) => a * b, 1) };
}

function inLayout(c: WinogradCase, nchw: Float64Array): Float64Array {
  return c.outLayout === "tokens" ? ref.nchwToTokens(nchw, c.batch, c.outChannels) : nchw;
}

for (const m of [2, 4] as const) {
  for (const [i, c] of cases.entries()) {
    Deno.test(`conv2dWinograd F(${m}×${m}) forward and backward-data match the reference for ${c.title}`, async () => {
      const gpu = await testGpu();
      const { xShape, yShape, wShape, size } = shapes(c);
      const conv = { ...c, kernel: 3, stride: 1 };
      const x = randn(size(xShape), 700 + i), w = randn(size(wShape), 710 + i, 0.5);
      const bias = randn(c.outChannels, 720 + i);
      const dyNchw = randn(size(yShape), 730 + i), dxBase = randn(size(xShape), 740 + i);

      const y = poisoned(gpu, yShape, "y");
      const dx = upload(gpu, dxBase, xShape, "dx");
      const xt = upload(gpu, x, xShape, "x"), wt = upload(gpu, w, wShape, "w");
      const dyt = upload(gpu, inLayout(c, dyNchw), yShape, "dy");
      const { title: _, bias: withBias, relu, ...sizes } = c;
      const o = { ...sizes, tile: m };
      await runPlan(gpu, (plan) => {
        conv2dWinograd(plan, y, xt, wt, {
          ...o,
          pass: "forward",
          relu: relu ?? false,
          ...(withBias ? { bias: upload(gpu, bias, [c.outChannels], "bias") } : {}),
        });
        conv2dWinograd(plan, dx, dyt, wt, { ...o, pass: "data", accumulate: true });
      });

      let yRef = ref.conv2dForward(x, w, c.bias ? bias : undefined, conv);
      if (c.relu) yRef = ref.relu(yRef);
      await expectTensor(gpu, "y", y, inLayout(c, yRef), TOL);
      const dxRef = ref.conv2dBackwardData(dyNchw, w, conv).map((v, j) => v + dxBase[j]);
      await expectTensor(gpu, "dx (accumulated)", dx, dxRef, TOL);
    });
  }
}

Deno.test("conv2dWinograd overwrites a poisoned dx and reuses caller scratch sized by winogradScratchSizes", async () => {
  const gpu = await testGpu();
  const c = { batch: 2, inChannels: 6, height: 9, width: 7, outChannels: 10, padding: 1 };
  const conv = { ...c, kernel: 3, stride: 1 };
  const xShape = [2, 6, 9, 7], yShape = [2, 10, 9, 7], wShape = [10, 6, 3, 3];
  const w = randn(540, 801, 0.5), dy = randn(2 * 10 * 63, 802);
  const dx = poisoned(gpu, xShape, "dx");
  const o: Conv2dWinogradOptions = { ...c, pass: "data" };
  const s = winogradScratchSizes(o);
  // Scratch larger than needed, poisoned: every element the kernels read must be written first.
  const scratch = { input: poisoned(gpu, [s.input + 5], "v"), product: poisoned(gpu, [s.product + 3], "m") };
  await runPlan(gpu, (plan) => {
    conv2dWinograd(plan, dx, upload(gpu, dy, yShape, "dy"), upload(gpu, w, wShape, "w"), { ...o, scratch });
  });
  await expectTensor(gpu, "dx", dx, ref.conv2dBackwardData(dy, w, conv), TOL);
});

Deno.test("the winograd variant of conv2dForward / conv2dBackwardData matches the reference", async () => {
  const gpu = await testGpu();
  const c = {
    batch: 2,
    inChannels: 12,
    height: 10,
    width: 11,
    outChannels: 20,
    kernel: 3,
    stride: 1,
    padding: 1,
    variant: "winograd" as const,
  };
  const xShape = [2, 12, 10, 11], yShape = [2, 20, 10, 11], wShape = [20, 12, 3, 3];
  const x = randn(2 * 12 * 110, 811), w = randn(20 * 12 * 9, 812, 0.5), dy = randn(2 * 20 * 110, 813);
  const y = poisoned(gpu, yShape, "y"), dx = poisoned(gpu, xShape, "dx");
  const wt = upload(gpu, w, wShape, "w");
  await runPlan(gpu, (plan) => {
    conv2dForward(plan, y, upload(gpu, x, xShape, "x"), wt, undefined, { ...c, relu: true });
    conv2dBackwardData(plan, dx, upload(gpu, dy, yShape, "dy"), wt, c);
  });
  await expectTensor(gpu, "y", y, ref.relu(ref.conv2dForward(x, w, undefined, c)), TOL);
  await expectTensor(gpu, "dx", dx, ref.conv2dBackwardData(dy, w, c), TOL);
});

Deno.test("conv2dWinograd and the winograd variant refuse what they cannot compute", async () => {
  const gpu = await testGpu();
  const plan = new Plan(gpu, "refused");
  const base = { batch: 1, inChannels: 2, height: 5, width: 5, outChannels: 3, padding: 1 };
  const x = poisoned(gpu, [1, 2, 5, 5], "x"), y = poisoned(gpu, [1, 3, 5, 5], "y");
  const w = poisoned(gpu, [3, 2, 3, 3], "w");
  assertThrows(
    () => conv2dWinograd(plan, y, x, w, { ...base, pass: "forward", padding: 3 }),
    RangeError,
    "padding",
  );
  assertThrows(
    () => conv2dWinograd(plan, x, y, w, { ...base, pass: "data", relu: true }),
    TypeError,
    "forward-only",
  );
  assertThrows(() => conv2dWinograd(plan, x, x, w, { ...base, pass: "forward" }), TypeError, "output");
  const strided = { ...base, kernel: 3, stride: 2, variant: "winograd" as const };
  assertThrows(
    () => conv2dForward(plan, poisoned(gpu, [1, 3, 3, 3]), x, w, undefined, strided),
    RangeError,
    "winograd",
  );
  const k5 = { ...base, kernel: 5, stride: 1, padding: 2, variant: "winograd" as const };
  assertThrows(
    () => conv2dBackwardData(plan, x, y, poisoned(gpu, [3, 2, 5, 5]), k5),
    RangeError,
    "winograd",
  );
  plan.destroy();
});

Deno.test("winogradFits accepts CCT conv2 at batch 128 and refuses scratch beyond the device's binding limit", async () => {
  const gpu = await testGpu();
  const conv2 = { batch: 128, inChannels: 64, height: 14, width: 14, outChannels: 128, padding: 1 };
  if (!winogradFits(gpu, { ...conv2, pass: "forward" })) {
    throw new Error(
      "CCT conv2 at batch 128 (51 MB of products) should fit any WebGPU device's default limits",
    );
  }
  const limit = gpu.device.limits.maxStorageBufferBindingSize;
  // Products of 16 positions × P tiles × 128 channels × 4 bytes: pick a batch whose products exceed the limit.
  const batch = Math.ceil(limit / (16 * 49 * 128 * 4)) + 1;
  if (winogradFits(gpu, { ...conv2, batch, pass: "forward" })) {
    throw new Error(`batch ${batch} needs more than the ${limit}-byte binding limit and was accepted`);
  }
});
