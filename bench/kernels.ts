/**
 * `deno task bench`: every kernel family's cases (median GPU time from timestamp queries, the fast kernel next to
 * the naive one and any other variants), then whole-model inference and training throughput.
 *
 * `deno task bench [family…] [--batch N] [--models-only] [--kernels-only]`; families: matmul conv attention
 * norm optimizer augment. Figures on a shared machine are noisy: compare ratios measured in the same run.
 */
import { parseArgs } from "node:util";
import { getGpu } from "../lib/gpu/device.ts";
import { benchmarkModel } from "../lib/benchmark.ts";
import { type BenchCase, rate, timePlan } from "./harness.ts";

const families: Record<string, () => Promise<{ cases: BenchCase[] }>> = {
  matmul: () => import("./matmul_bench.ts"),
  conv: () => import("./conv_bench.ts"),
  attention: () => import("./attention_bench.ts"),
  norm: () => import("./norm_bench.ts"),
  optimizer: () => import("./optimizer_bench.ts"),
  augment: () => import("./augment_bench.ts"),
};

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    "models-only": { type: "boolean" },
    "kernels-only": { type: "boolean" },
  },
});

const gpu = await getGpu();
console.log(
  `# ${gpu.description}, backend ${gpu.backend}, subgroups ${gpu.hasSubgroups}, f16 ${gpu.hasF16}\n`,
);

if (!values["models-only"]) {
  for (const family of positionals.length ? positionals : Object.keys(families)) {
    const load = families[family];
    if (!load) throw new RangeError(`unknown family "${family}"; one of ${Object.keys(families).join(", ")}`);
    console.log(`## ${family}`);
    const { cases } = await load();
    // The fastest FLOP rate seen so far in this family (matmul's first case is a 1024³ square over every
    // variant): each case is also reported as a fraction of it.
    let best = 0;
    for (const c of cases) {
      const { plan, naive, variants } = await c.build(gpu);
      const ms = await timePlan(gpu, plan, { reps: 2, samples: 5 });
      const parts = [`${c.name}: ${ms.toFixed(3)} ms ${rate(c, ms)}`];
      const gflops = c.flops / ms / 1e6;
      if (naive) {
        // Naive kernels are 5–40× slower: fewer repetitions keep the whole run in minutes.
        const n = await timePlan(gpu, naive, { reps: 1, samples: 3 });
        parts.push(`naive ${n.toFixed(3)} ms ${rate(c, n)} (×${(n / ms).toFixed(1)})`);
      }
      for (const [name, p] of Object.entries(variants ?? {})) {
        const t = await timePlan(gpu, p, { reps: 1, samples: 3 });
        parts.push(`${name} ${t.toFixed(3)} ms ${rate(c, t)}`);
        best = Math.max(best, c.flops / t / 1e6);
      }
      best = Math.max(best, gflops);
      if (c.flops > 0 && best > 0) parts.push(`${Math.round((100 * gflops) / best)}% of the best rate seen`);
      console.log(parts.join(" | "));
    }
    console.log();
  }
}

if (!values["kernels-only"]) {
  console.log("## models (inference at batch 128, latency at batch 1, training step at batch 128)");
  // cct_7_3x1_32's training step takes tens of seconds here: time two steps, three times.
  const models: [string, Parameters<typeof benchmarkModel>[1]][] = [
    ["cct_2_3x2_32", { imgSize: 28, inChannels: 1 }],
    ["cct_7_3x1_32", { repeats: 3, trainSteps: 2 }],
  ];
  for (const [name, options] of models) {
    const r = await benchmarkModel(name, { ...options, batch: 128 });
    console.log(
      `${name} ${r.input}: inference ${r.inferenceImagesPerSecond} img/s, latency ${r.latencyBatch1Ms} ms, ` +
        `training ${r.trainImagesPerSecond} img/s (${r.trainStepMs} ms/step)`,
    );
  }
}
