/**
 * The fused first tokenizer stage (conv ▸ ReLU ▸ max-pool, lib/kernels/conv_pool.ts) against the unfused path
 * (conv2dForward(relu) + maxPool2dForward; maxPool2dBackward(ReLU mask) + conv2dBackwardWeights), at batch 128:
 * CCT-2/3x2's first stage on 1×28×28 (1→64 k3, 28×28 → 14×14, NCHW: a later stage follows) and CCT-7/3x1's stage
 * on 3×32×32 (3→256 k3, 32×32 → 16×16 tokens; also 3→64 NCHW). Each case's plan is the fused default; the unfused
 * path and a few fused blockings are variants. The runner alternates the plans of a case over several rounds and
 * reports medians (the machine is shared: compare side by side, not against other runs).
 *
 * Run: `deno run --allow-read=. --allow-env bench/conv_pool_bench.ts [name filter] [--rounds=N] [--batch=N]`.
 */
import type { BenchCase } from "./harness.ts";
import { rate, timePlan } from "./harness.ts";
import { getGpu, type Gpu } from "../lib/gpu/device.ts";
import { Plan } from "../lib/gpu/plan.ts";
import { createTensor, type Tensor, writeTensor } from "../lib/gpu/tensor.ts";
import {
  conv2dBackwardWeights,
  conv2dForward,
  maxPool2dBackward,
  maxPool2dForward,
} from "../lib/kernels/conv.ts";
import {
  CCT_POOL,
  conv2dReluMaxPoolBackwardWeights,
  conv2dReluMaxPoolForward,
  type Conv2dReluMaxPoolOptions,
  conv2dReluMaxPoolSizes,
} from "../lib/kernels/conv_pool.ts";

/** A tensor of small pseudo-random values (content does not change the timing, but keeps numbers finite). */
function filled(gpu: Gpu, shape: number[], label: string, seed = 12345): Tensor {
  const t = createTensor(gpu, shape, label);
  const data = new Float32Array(t.size);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = (s >>> 8) / 16777216 - 0.5;
  }
  writeTensor(gpu, t, data);
  return t;
}

type Pass = "forward" | "weight gradient";

function stageCase(title: string, o: Conv2dReluMaxPoolOptions, pass: Pass): BenchCase {
  const s = conv2dReluMaxPoolSizes(o);
  const macs = o.batch * o.outChannels * s.convH * s.convW * o.inChannels * o.kernel * o.kernel;
  const layout = o.outLayout ?? "nchw";
  return {
    name: `${title} ${pass}: ${o.inChannels}→${o.outChannels} k${o.kernel} ${o.height}×${o.width} → ` +
      `${s.pooledH}×${s.pooledW} ${layout}, batch ${o.batch}`,
    flops: 2 * macs,
    bytes: 0,
    build(gpu) {
      const xShape = [o.batch, o.inChannels, o.height, o.width];
      const wShape = [o.outChannels, o.inChannels, o.kernel, o.kernel];
      const convShape = [o.batch, o.outChannels, s.convH, s.convW];
      const x = filled(gpu, xShape, "x"), w = filled(gpu, wShape, "w", 777);
      const pooled = createTensor(gpu, s.pooledShape, "pooled"),
        argmax = createTensor(gpu, s.pooledShape, "argmax");
      const dy = filled(gpu, s.pooledShape, "dy", 4242);
      const dw = createTensor(gpu, wShape, "dw");
      const conv = createTensor(gpu, convShape, "conv");
      const pool = { batch: o.batch, channels: o.outChannels, height: s.convH, width: s.convW, ...CCT_POOL };
      const poolOpts = { ...pool, ...o.pool, outLayout: layout };
      // Real pooled outputs and argmaxes (and the conv output the unfused backward masks with).
      const setup = new Plan(gpu, "stage setup");
      conv2dForward(setup, conv, x, w, undefined, { ...o, outLayout: "nchw", relu: true });
      maxPool2dForward(setup, pooled, argmax, conv, poolOpts);
      setup.submit();
      const unfused = new Plan(gpu, `${title} ${pass} unfused`);
      if (pass === "forward") {
        conv2dForward(unfused, conv, x, w, undefined, { ...o, outLayout: "nchw", relu: true });
        maxPool2dForward(unfused, pooled, argmax, conv, poolOpts);
      } else {
        const dconv = createTensor(gpu, convShape, "dconv");
        maxPool2dBackward(unfused, dconv, dy, argmax, { ...poolOpts, reluOutput: conv });
        conv2dBackwardWeights(unfused, dw, dconv, x, { ...o, outLayout: "nchw", accumulate: true });
      }
      const fused = (
        label: string,
        extra: { rowBlock?: number; channelVecs?: number; gatherTaps?: boolean },
      ) => {
        const plan = new Plan(gpu, `${title} ${pass} fused ${label}`);
        if (pass === "forward") conv2dReluMaxPoolForward(plan, pooled, argmax, x, w, { ...o, ...extra });
        else {
          conv2dReluMaxPoolBackwardWeights(plan, dw, dy, argmax, pooled, x, {
            ...o,
            channelVecs: extra.channelVecs,
            gatherTaps: extra.gatherTaps,
            accumulate: true,
          });
        }
        return plan;
      };
      const variants: Record<string, Plan> = { unfused };
      if (pass === "forward") {
        const other = o.inChannels === 1 ? 4 : 2; // the default is 2 for one channel, else 4
        variants[`fused r${other}`] = fused(`r${other}`, { rowBlock: other });
        variants["fused q4"] = fused("q4", { channelVecs: 4 });
      } else {
        variants["fused q1"] = fused("q1", { channelVecs: 1 });
        variants["fused q2"] = fused("q2", { channelVecs: 2 });
        variants["fused gather"] = fused("gather", { gatherTaps: true });
      }
      return Promise.resolve({ plan: fused("default", {}), variants });
    },
  };
}

/** The first tokenizer stages of CCT-2/3x2 (1×28×28) and CCT-7/3x1 (3×32×32) at `batch`. */
export function convPoolCases(batch: number): BenchCase[] {
  const cct2 = {
    batch,
    inChannels: 1,
    height: 28,
    width: 28,
    outChannels: 64,
    kernel: 3,
    stride: 1,
    padding: 1,
  };
  const cct7 = {
    ...cct2,
    inChannels: 3,
    height: 32,
    width: 32,
    outChannels: 256,
    outLayout: "tokens" as const,
  };
  const rgb64 = { ...cct2, inChannels: 3, height: 32, width: 32 };
  return [
    stageCase("cct_2 stage 1", cct2, "forward"),
    stageCase("cct_2 stage 1", cct2, "weight gradient"),
    stageCase("rgb stage", rgb64, "forward"),
    stageCase("rgb stage", rgb64, "weight gradient"),
    stageCase("cct_7 stage", cct7, "forward"),
    stageCase("cct_7 stage", cct7, "weight gradient"),
  ];
}

/** The cases at the training batch of 128. */
export const cases: BenchCase[] = convPoolCases(128);

if (import.meta.main) {
  const filter = Deno.args.find((a) => !a.startsWith("--")) ?? "";
  const rounds = Number(Deno.args.find((a) => a.startsWith("--rounds="))?.slice(9) ?? 5);
  const batch = Number(Deno.args.find((a) => a.startsWith("--batch="))?.slice(8) ?? 128);
  const gpu = await getGpu();
  console.log(`${gpu.description} (${gpu.backend}), batch ${batch}, ${rounds} alternating rounds, medians`);
  for (const c of convPoolCases(batch).filter((c) => c.name.includes(filter))) {
    const built = await c.build(gpu);
    const plans: [string, Plan][] = [["fused", built.plan], ...Object.entries(built.variants ?? {})];
    const times = new Map<string, number[]>(plans.map(([label]) => [label, []]));
    for (let r = 0; r < rounds; r++) {
      for (const [label, plan] of plans) {
        times.get(label)!.push(await timePlan(gpu, plan, { reps: 2, samples: 3 }));
      }
    }
    const median = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
    const parts = plans.map(([label]) => {
      const ms = median(times.get(label)!);
      return `${label} ${ms.toFixed(2)} ms (${rate(c, ms)})`;
    });
    const ratio = median(times.get("unfused")!) / median(times.get("fused")!);
    console.log(`${c.name}: ${parts.join(" | ")} | unfused/fused ${ratio.toFixed(2)}×`);
    for (const [, plan] of plans) plan.destroy();
  }
}
