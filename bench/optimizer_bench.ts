/**
 * Benchmarks of the loss and optimizer kernels at the shapes of a training step at batch 128: AdamW, the global
 * gradient norm and gradient zeroing over the parameter tables of CCT-7/3x1 (3.76 M parameters) and CCT-2/3x2 on
 * 1×28×28 (0.28 M), and the fused cross-entropy + metrics over [128, 10] logits. Correctness is the tests' job.
 *
 * Run: `deno run --allow-read=. --allow-env bench/optimizer_bench.ts`
 */
import { type BenchCase, rate, timePlan } from "./harness.ts";
import { getGpu, type Gpu } from "../lib/gpu/device.ts";
import { Plan } from "../lib/gpu/plan.ts";
import { createTensor, type Tensor, uploadTensor } from "../lib/gpu/tensor.ts";
import { accumulateMetrics, crossEntropyForwardBackward } from "../lib/kernels/loss.ts";
import {
  adamwUpdate,
  createAdamwHyper,
  DECAY_BLOCK,
  gradNormSquared,
  NORM_MAX_PARTIALS,
  setAdamwHyper,
  zero,
} from "../lib/kernels/optimizer.ts";

/** Parameter counts; a whole arena is padded per tensor, so round up to its 64-float alignment. */
const MODELS = [
  { name: "cct_7_3x1_32", params: 3_760_139 },
  { name: "cct_2_3x2 1×28×28", params: 280_651 },
];
const padded = (n: number) => Math.ceil(n / 64) * 64;

function filled(gpu: Gpu, n: number, label: string, value = 0.01): Tensor {
  return uploadTensor(gpu, new Float32Array(n).fill(value), [n], label);
}

function adamwCase(model: string, n: number): BenchCase {
  return {
    name: `adamw ${(n / 1e6).toFixed(2)} M params (${model})`,
    flops: 0,
    bytes: 7 * 4 * n, // read p, g, m, v; write p, m, v
    build(gpu) {
      const [params, grads, m, v] = ["params", "grads", "m", "v"].map((l) => filled(gpu, n, l));
      const hyper = createAdamwHyper(gpu);
      setAdamwHyper(hyper, 1e-3, 0.9, 0.999, 1e-8, 0.05, 10);
      const words = Math.ceil(n / DECAY_BLOCK / 32);
      const mask = uploadTensor(gpu, new Uint32Array(words).fill(0x55555555), [words], "decay-mask");
      const record = (vec4: boolean, decay: boolean | Tensor = true) => {
        const plan = new Plan(gpu, `adamw ${model}${vec4 ? "" : " scalar"}`);
        adamwUpdate(plan, params, grads, m, v, hyper, { offset: 0, length: n, decay, vec4 });
        return plan;
      };
      return Promise.resolve({
        plan: record(true),
        naive: record(false),
        variants: { masked: record(true, mask) },
      });
    },
  };
}

function gradNormCase(model: string, n: number): BenchCase {
  return {
    name: `grad norm² ${(n / 1e6).toFixed(2)} M (${model})`,
    flops: 0,
    bytes: 4 * n,
    build(gpu) {
      const grads = filled(gpu, n, "grads");
      const plan = new Plan(gpu, `gradNorm ${model}`);
      gradNormSquared(
        plan,
        createTensor(gpu, [1], "norm"),
        grads,
        createTensor(gpu, [NORM_MAX_PARTIALS], "partials"),
      );
      return Promise.resolve({ plan });
    },
  };
}

function zeroCase(model: string, n: number): BenchCase {
  return {
    name: `zero grads ${(n / 1e6).toFixed(2)} M (${model})`,
    flops: 0,
    bytes: 4 * n,
    build(gpu) {
      const plan = new Plan(gpu, `zero ${model}`);
      zero(plan, createTensor(gpu, [n], "grads"));
      return Promise.resolve({ plan });
    },
  };
}

function lossCase(batch: number, classes: number): BenchCase {
  return {
    name: `cross-entropy + metrics [${batch}, ${classes}] (ε 0.1)`,
    flops: 0,
    bytes: 4 * (3 * batch * classes + 3 * batch), // logits twice (loss, metrics), dlogits, labels, losses
    build(gpu) {
      const logits = uploadTensor(
        gpu,
        Float32Array.from({ length: batch * classes }, (_, i) => Math.sin(i)),
        [batch, classes],
        "logits",
      );
      const labels = uploadTensor(
        gpu,
        Int32Array.from({ length: batch }, (_, i) => i % classes),
        [batch],
        "labels",
      );
      const losses = createTensor(gpu, [batch], "losses"),
        dlogits = createTensor(gpu, [batch, classes], "dlogits");
      const plan = new Plan(gpu, "loss");
      crossEntropyForwardBackward(plan, losses, dlogits, logits, labels, { batch, classes, smoothing: 0.1 });
      accumulateMetrics(plan, createTensor(gpu, [4], "metrics"), losses, logits, labels, { batch, classes });
      return Promise.resolve({ plan });
    },
  };
}

export const cases: BenchCase[] = [
  ...MODELS.flatMap(({ name, params }) => [
    adamwCase(name, padded(params)),
    gradNormCase(name, padded(params)),
    zeroCase(name, padded(params)),
  ]),
  lossCase(128, 10),
  lossCase(128, 100),
];

if (import.meta.main) {
  const gpu = await getGpu();
  console.log(`${gpu.description} (${gpu.backend})`);
  for (const c of cases) {
    const { plan, naive, variants } = await c.build(gpu);
    const ms = await timePlan(gpu, plan);
    let line = `${c.name}: ${ms.toFixed(3)} ms, ${rate(c, ms)}`;
    if (naive) {
      const naiveMs = await timePlan(gpu, naive);
      line += `; scalar ${naiveMs.toFixed(3)} ms, ${rate(c, naiveMs)}`;
    }
    for (const [name, p] of Object.entries(variants ?? {})) {
      const vms = await timePlan(gpu, p);
      line += `; ${name} ${vms.toFixed(3)} ms, ${rate(c, vms)}`;
    }
    console.log(line);
  }
}
