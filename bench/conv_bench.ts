/**
 * Benchmarks of the convolutional tokenizer kernels at batch 128: CCT-2/3x2 on 1×28×28 (conv1 1→64 k3 28×28,
 * pool → 14×14, conv2 64→128 k3 14×14, pool → 7×7 = 49 tokens), CCT-2/7x1 on 1×28×28 (conv 1→128 k7 stride 2,
 * pool → 7×7 = 49 tokens), CCT-7/3x1 on 3×32×32 (conv 3→256 k3, pool → 16×16 = 256 tokens) and the ViT/CVT
 * patch embedding 3×32×32 P4 → 64 tokens of d 256. Each case has a naive
 * plan (one output per invocation) for comparison, and on adapters with subgroups each conv case also times the
 * blocked variant next to the default, and every pass the "subgroup" and "subgroupGemm" variants (the default
 * picks one of them by the reduction's channel count); the weight gradient also two other tiles of its
 * implicit GEMM (`gemm 32×2 u2`, narrower, and `gemm row 64`, the stride-1 sliding-window kernel). The 3×3
 * stride-1 forward and backward-data also time the "winograd" variant with F(2×2) and F(4×4) tiles where its scratch
 * fits one binding (and, with subgroups, its products on the 32×8 matmul tile instead of the batched default).
 *
 * Run: `deno run --allow-read=. --allow-env bench/conv_bench.ts [name filter] [--no-naive] [--batch=N] [--cpu]`.
 * `--cpu` also reports GFLOP per CPU-second of this process (llvmpipe's threads run in it), a figure that other
 * processes' load on a shared machine distorts far less than GPU wall time.
 */
import type { BenchCase } from "./harness.ts";
import { rate, timePlan } from "./harness.ts";
import process from "node:process";
import { getGpu, type Gpu } from "../lib/gpu/device.ts";
import { Plan } from "../lib/gpu/plan.ts";
import { createTensor, type Tensor, writeTensor } from "../lib/gpu/tensor.ts";
import {
  conv2dBackwardBias,
  conv2dBackwardData,
  conv2dBackwardWeights,
  conv2dForward,
  type Conv2dOptions,
  convOutputSize,
  type ConvVariant,
  maxPool2dBackward,
  maxPool2dForward,
  type MaxPool2dOptions,
  type PoolVariant,
  type WeightGemmTile,
} from "../lib/kernels/conv.ts";
import { conv2dWinograd, winogradFits } from "../lib/kernels/winograd.ts";

/** A tensor of small pseudo-random values (content does not change the timing, but keeps numbers finite). */
function filled(gpu: Gpu, shape: number[], label: string): Tensor {
  const t = createTensor(gpu, shape, label);
  const data = new Float32Array(t.size);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = (s >>> 8) / 16777216 - 0.5;
  }
  writeTensor(gpu, t, data);
  return t;
}

function convShapes(o: Conv2dOptions) {
  const oh = convOutputSize(o.height, o.kernel, o.stride, o.padding);
  const ow = convOutputSize(o.width, o.kernel, o.stride, o.padding);
  return {
    x: [o.batch, o.inChannels, o.height, o.width],
    w: [o.outChannels, o.inChannels, o.kernel, o.kernel],
    y: o.outLayout === "tokens" ? [o.batch, oh * ow, o.outChannels] : [o.batch, o.outChannels, oh, ow],
    macs: o.batch * oh * ow * o.outChannels * o.inChannels * o.kernel * o.kernel,
  };
}

type ConvPass = "forward" | "backward data" | "backward weights";

function convCase(
  title: string,
  o: Conv2dOptions & { relu?: boolean; bias?: boolean },
  pass: ConvPass,
): BenchCase {
  const s = convShapes(o);
  return {
    name: `conv2d ${pass} ${o.inChannels}→${o.outChannels} k${o.kernel} ${o.height}×${o.width} (${title})`,
    flops: 2 * s.macs,
    bytes: 0,
    build(gpu) {
      const x = filled(gpu, s.x, "x"), w = filled(gpu, s.w, "w"), y = filled(gpu, s.y, "y");
      const bias = o.bias ? filled(gpu, [o.outChannels], "bias") : undefined;
      const record = (variant?: ConvVariant, extra: Partial<Conv2dOptions> = {}) => {
        const plan = new Plan(gpu, `${title} ${pass} ${variant ?? "default"}`);
        const opts = { ...o, variant, ...extra };
        if (pass === "forward") conv2dForward(plan, y, x, w, bias, opts);
        else if (pass === "backward data") conv2dBackwardData(plan, x, y, w, opts);
        else {
          conv2dBackwardWeights(plan, w, y, x, { ...opts, accumulate: true });
          if (bias) conv2dBackwardBias(plan, bias, y, { ...opts, accumulate: true });
        }
        return plan;
      };
      // The default is a subgroup kernel where the adapter has subgroups; the blocked one is then a variant.
      const subgroups = gpu.hasSubgroups && gpu.subgroupSize === 8;
      const variants: Record<string, Plan> = {};
      if (subgroups) {
        variants.blocked = record("blocked");
        variants.subgroup = record("subgroup");
        variants.subgroupGemm = record("subgroupGemm");
      }
      if (pass !== "backward weights" && o.kernel === 3 && o.stride === 1) {
        for (const tile of [2, 4] as const) {
          const { relu: _relu, bias: _bias, kernel: _k, stride: _s, ...sizes } = o;
          // Large maps (CCT-7's 256-channel 32×32 conv) need more scratch than one binding may hold.
          if (!winogradFits(gpu, { ...sizes, pass: pass === "forward" ? "forward" : "data", tile })) continue;
          variants[`winograd F${tile}`] = record("winograd", { winogradTile: tile });
          if (!subgroups) continue;
          // The α² products on the linear layers' taller tile instead of the batched default.
          const plan = new Plan(gpu, `${title} ${pass} winograd F${tile} 32×8`);
          if (pass === "forward") {
            conv2dWinograd(plan, y, x, w, {
              ...sizes,
              pass: "forward",
              relu: o.relu ?? false,
              ...(bias ? { bias } : {}),
              tile,
              matmulVariant: "subgroup32x8",
            });
          } else {
            conv2dWinograd(plan, x, y, w, { ...sizes, pass: "data", tile, matmulVariant: "subgroup32x8" });
          }
          variants[`winograd F${tile} 32×8`] = plan;
        }
      }
      if (subgroups && pass === "backward weights") {
        const tiles: Record<string, WeightGemmTile> = {
          "gemm 32×2 u2": { channels: 32, columns: 2, unroll: 2 },
          "gemm row 64": { channels: 64, columns: 1, unroll: 1, row: true },
        };
        for (const [label, weightTile] of Object.entries(tiles)) {
          const plan = new Plan(gpu, `${title} ${pass} ${label}`);
          conv2dBackwardWeights(plan, w, y, x, {
            ...o,
            variant: "subgroupGemm",
            weightTile,
            accumulate: true,
          });
          if (bias) conv2dBackwardBias(plan, bias, y, { ...o, accumulate: true });
          variants[label] = plan;
        }
      }
      return Promise.resolve({
        plan: record(),
        naive: record("naive"),
        variants: Object.keys(variants).length > 0 ? variants : undefined,
      });
    },
  };
}

function poolCase(title: string, o: MaxPool2dOptions, pass: "forward" | "backward"): BenchCase {
  const oh = convOutputSize(o.height, o.kernel, o.stride, o.padding);
  const ow = convOutputSize(o.width, o.kernel, o.stride, o.padding);
  const nIn = o.batch * o.channels * o.height * o.width, nOut = o.batch * o.channels * oh * ow;
  const outShape = o.outLayout === "tokens" ? [o.batch, oh * ow, o.channels] : [o.batch, o.channels, oh, ow];
  return {
    name: `maxPool2d ${pass} ${o.channels}×${o.height}×${o.width} → ${oh}×${ow} (${title})`,
    flops: 0,
    // forward reads x and writes y + argmax; backward reads dy + argmax (≈ 2.25 times per input) + the ReLU mask
    // and writes dx
    bytes: pass === "forward" ? 4 * (nIn + 2 * nOut) : 4 * (2 * nIn + 2 * nOut),
    build(gpu) {
      const x = filled(gpu, [o.batch, o.channels, o.height, o.width], "x");
      const y = filled(gpu, outShape, "y"), argmax = createTensor(gpu, outShape, "argmax");
      const dx = createTensor(gpu, [o.batch, o.channels, o.height, o.width], "dx");
      if (pass === "backward") {
        // argmax from a real forward, so the gather does its real work
        const setup = new Plan(gpu, "pool setup");
        maxPool2dForward(setup, y, argmax, x, o);
        setup.submit();
      }
      const record = (variant: PoolVariant) => {
        const plan = new Plan(gpu, `${title} pool ${pass} ${variant}`);
        const opts = { ...o, variant };
        if (pass === "forward") maxPool2dForward(plan, y, argmax, x, opts);
        else maxPool2dBackward(plan, dx, y, argmax, { ...opts, reluOutput: x });
        return plan;
      };
      return Promise.resolve({ plan: record("blocked"), naive: record("naive") });
    },
  };
}

/** The conv-family cases of a CCT-2/3x2 (28×28), CCT-7/3x1 (32×32) and ViT-Lite/CVT (P4) training step. */
export function convCases(batch: number): BenchCase[] {
  const cct2Conv1 = {
    batch,
    inChannels: 1,
    height: 28,
    width: 28,
    outChannels: 64,
    kernel: 3,
    stride: 1,
    padding: 1,
    relu: true,
  };
  const cct2Conv2 = { ...cct2Conv1, inChannels: 64, height: 14, width: 14, outChannels: 128 };
  const cct7Conv = { ...cct2Conv1, inChannels: 3, height: 32, width: 32, outChannels: 256 };
  // CCT-2/7x1 on 28×28: one 7×7 stride-2 conv, pool → 7×7 = 49 tokens.
  const cct2Stem7 = { ...cct2Conv1, outChannels: 128, kernel: 7, stride: 2, padding: 3 };
  const patchEmbedding = {
    batch,
    inChannels: 3,
    height: 32,
    width: 32,
    outChannels: 256,
    kernel: 4,
    stride: 4,
    padding: 0,
    bias: true,
    outLayout: "tokens" as const,
  };
  const pool = { batch, kernel: 3, stride: 2, padding: 1 };

  return [
    convCase("cct_2 conv1", cct2Conv1, "forward"),
    poolCase("cct_2 pool1", { ...pool, channels: 64, height: 28, width: 28 }, "forward"),
    convCase("cct_2 conv2", cct2Conv2, "forward"),
    poolCase(
      "cct_2 pool2",
      { ...pool, channels: 128, height: 14, width: 14, outLayout: "tokens" },
      "forward",
    ),
    poolCase(
      "cct_2 pool2",
      { ...pool, channels: 128, height: 14, width: 14, outLayout: "tokens" },
      "backward",
    ),
    convCase("cct_2 conv2", cct2Conv2, "backward weights"),
    convCase("cct_2 conv2", cct2Conv2, "backward data"),
    poolCase("cct_2 pool1", { ...pool, channels: 64, height: 28, width: 28 }, "backward"),
    convCase("cct_2 conv1", cct2Conv1, "backward weights"),
    convCase("cct_2_7x1 conv", cct2Stem7, "forward"),
    poolCase(
      "cct_2_7x1 pool",
      { ...pool, channels: 128, height: 14, width: 14, outLayout: "tokens" },
      "backward",
    ),
    convCase("cct_2_7x1 conv", cct2Stem7, "backward weights"),
    convCase("cct_7 conv", cct7Conv, "forward"),
    poolCase("cct_7 pool", { ...pool, channels: 256, height: 32, width: 32, outLayout: "tokens" }, "forward"),
    convCase("cct_7 conv", cct7Conv, "backward weights"),
    convCase("vit patch embedding", patchEmbedding, "forward"),
    convCase("vit patch embedding", patchEmbedding, "backward weights"),
  ];
}

/** The cases at the training batch of 128. */
export const cases: BenchCase[] = convCases(128);

/** CPU milliseconds (all threads of this process) per run of `plan`, median of `samples`. */
async function cpuTime(gpu: Gpu, plan: Plan, reps = 2, samples = 3): Promise<number> {
  await plan.run();
  const times: number[] = [];
  for (let s = 0; s < samples; s++) {
    const encoder = gpu.device.createCommandEncoder();
    for (let r = 0; r < reps; r++) plan.encode(encoder);
    const start = process.cpuUsage();
    gpu.device.queue.submit([encoder.finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
    const used = process.cpuUsage(start);
    times.push((used.user + used.system) / 1000 / reps);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

if (import.meta.main) {
  const filter = Deno.args.find((a) => !a.startsWith("--")) ?? "";
  const naive = !Deno.args.includes("--no-naive");
  const cpu = Deno.args.includes("--cpu");
  const batch = Number(Deno.args.find((a) => a.startsWith("--batch="))?.slice(8) ?? 128);
  const gpu = await getGpu();
  console.log(`${gpu.description} (${gpu.backend}), batch ${batch}`);
  for (const c of convCases(batch).filter((c) => c.name.includes(filter))) {
    const built = await c.build(gpu);
    const plans: [string, Plan][] = [["default", built.plan], ...Object.entries(built.variants ?? {})];
    if (naive && built.naive) plans.push(["naive", built.naive]);
    const parts: string[] = [];
    for (const [label, plan] of plans) {
      const ms = await timePlan(
        gpu,
        plan,
        label === "naive" ? { reps: 1, samples: 3 } : { reps: 2, samples: 5 },
      );
      let part = `${label} ${ms.toFixed(1)} ms ${rate(c, ms)}`;
      if (cpu) {
        const cpuMs = await cpuTime(gpu, plan);
        part += `, ${cpuMs.toFixed(1)} cpu-ms = ${rate(c, cpuMs)} per CPU-s`;
      }
      parts.push(part);
    }
    console.log(`${c.name}: ${parts.join(" | ")}`);
  }
}
