/**
 * Augmentation benchmarks at batch 128, the input sides of the two reference training steps: CCT-7/3x1 on
 * CIFAR 3×32×32 (the SPEC §4 recipe: random resized crop 0.8–1, flip, rand-m9-mstd0.5-inc1, erasing 0.25;
 * mixup/cutmix into 10 classes) and CCT-2/3x2 on 1×28×28 (padded crop 2 + flip; mixup/cutmix). The model widths
 * (tokens, d, heads, MLP) do not enter augmentation. The default kernels (a per-sample parameter pass, then one
 * invocation per image row) are timed against one invocation per element ("per element"), the naive variant that
 * recomputes a sample's draws in every element (both without RandAugment), the same without RandAugment, and
 * evaluation's plain normalise (the floor).
 *
 * Run: `deno run --allow-read=. --allow-env bench/augment_bench.ts`
 */
import type { Gpu } from "../lib/gpu/device.ts";
import { Plan, UniformBlock } from "../lib/gpu/plan.ts";
import { createTensor, type Tensor, writeTensor } from "../lib/gpu/tensor.ts";
import {
  AUGMENT_PARAM_WORDS,
  augmentImages,
  type AugmentOptions,
  mixBatch,
  packPixels,
  sampleMix,
  writeMixParams,
} from "../lib/kernels/augment.ts";
import { type BenchCase, rate, timePlan } from "./harness.ts";

const batch = 128;
const shapes: {
  model: string;
  channels: number;
  side: number;
  opts: Partial<AugmentOptions>;
  randAugment: boolean;
}[] = [
  {
    model: "cct_7_3x1 cifar",
    channels: 3,
    side: 32,
    opts: {
      mean: [0.4914, 0.4822, 0.4465],
      std: [0.247, 0.2435, 0.2616],
      resizedCrop: true,
      flip: true,
      reprob: 0.25,
    },
    randAugment: true,
  },
  {
    model: "cct_2_3x2 28px",
    channels: 1,
    side: 28,
    opts: { mean: [0.1307], std: [0.3081], pad: 2, flip: true },
    randAugment: false,
  },
];

function pixelTensor(gpu: Gpu, n: number): Tensor {
  const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + (i >> 7)) & 255);
  const words = packPixels(bytes);
  const t = createTensor(gpu, [words.length], "pixels");
  writeTensor(gpu, t, words);
  return t;
}

export const cases: BenchCase[] = shapes.flatMap(
  ({ model, channels, side, opts, randAugment }): BenchCase[] => {
    const n = batch * channels * side * side;
    const o = { batch, channels, height: side, width: side, mean: [], std: [], ...opts, seed: 1234 };
    return [
      {
        name: `augmentImages ${batch}×${channels}×${side}×${side}${
          randAugment ? " + RandAugment" : ""
        } (${model})`,
        flops: 0,
        bytes: n + 4 * n, // read u8, write f32
        build(gpu) {
          const pixels = pixelTensor(gpu, n);
          const out = createTensor(gpu, [n], "out");
          const params = createTensor(gpu, [batch * AUGMENT_PARAM_WORDS], "params");
          const plan = new Plan(gpu, "augment");
          const ra = {
            scratch: [createTensor(gpu, [n], "scratch 0"), createTensor(gpu, [n], "scratch 1")] as const,
            lut: createTensor(gpu, [batch * channels * 256], "lut"),
          };
          augmentImages(plan, out, pixels, params, randAugment ? { ...o, randAugment: ra } : o);
          const naive = new Plan(gpu, "augment naive");
          augmentImages(naive, out, pixels, null, { ...o, variant: "naive" });
          const evaluation = new Plan(gpu, "normalise only");
          augmentImages(evaluation, out, pixels, null, {
            batch,
            channels,
            height: side,
            width: side,
            mean: o.mean,
            std: o.std,
          });
          const element = new Plan(gpu, "augment per element");
          augmentImages(element, out, pixels, params, { ...o, variant: "element" });
          const variants: Record<string, Plan> = { "per element": element, "normalise only": evaluation };
          if (randAugment) {
            variants["without RandAugment"] = new Plan(gpu, "augment without RandAugment");
            augmentImages(variants["without RandAugment"], out, pixels, params, o);
          }
          return Promise.resolve({ plan, naive, variants });
        },
      },
      {
        name: `mixBatch (mixup) ${batch}×${channels}×${side}×${side}, 10 classes (${model})`,
        flops: 0,
        bytes: 2 * 4 * n, // read and write every element of the images
        build(gpu) {
          const images = createTensor(gpu, [n], "images");
          const targets = createTensor(gpu, [batch * 10], "targets");
          const labels = createTensor(gpu, [batch], "labels");
          writeTensor(gpu, labels, Int32Array.from({ length: batch }, (_, b) => b % 10));
          const mo = { batch, channels, height: side, width: side, classes: 10, smoothing: 0.1 };
          const mixOpts = { height: side, width: side };
          // One block per mode: the mode is read at run time, so the two plans differ only in their block.
          const make = (mode: "mixup" | "cutmix") => {
            const block = new UniformBlock(gpu, 8, mode);
            let step = 0;
            while (sampleMix(1, step, mixOpts).mode !== mode) step++;
            writeMixParams(block, sampleMix(1, step, mixOpts));
            const plan = new Plan(gpu, `mix ${mode}`);
            mixBatch(plan, images, targets, labels, block, mo);
            return plan;
          };
          return Promise.resolve({ plan: make("mixup"), variants: { cutmix: make("cutmix") } });
        },
      },
    ];
  },
);

if (import.meta.main) {
  const { getGpu } = await import("../lib/gpu/device.ts");
  const gpu = await getGpu();
  // The machine is shared: alternate the variants for a few rounds and keep each one's best median.
  const rounds = 3;
  console.log(`${gpu.description} (${gpu.backend}), best of ${rounds} medians`);
  for (const c of cases) {
    const { plan, naive, variants = {} } = await c.build(gpu);
    const all: [string, Plan][] = [
      ["", plan],
      ...(naive ? [["naive", naive] as [string, Plan]] : []),
      ...Object.entries(variants),
    ];
    const best = new Map<string, number>();
    for (let r = 0; r < rounds; r++) {
      for (const [name, p] of all) {
        best.set(name, Math.min(best.get(name) ?? Infinity, await timePlan(gpu, p)));
      }
    }
    const ms = best.get("")!;
    let line = `${c.name}: ${ms.toFixed(3)} ms, ${rate(c, ms)}`;
    for (const [name] of all.slice(1)) {
      const v = best.get(name)!;
      line += `; ${name} ${v.toFixed(3)} ms (${(v / ms).toFixed(2)}×)`;
    }
    console.log(line);
    for (const [, p] of all) p.destroy();
  }
}
