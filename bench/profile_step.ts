/**
 * Where one training step's GPU time goes: records a cct training pass (forward with training rates and the
 * whole backward) at batch BATCH (default 128), times every dispatch with GPU timestamps three times and prints
 * the median of each dispatch above 4 ms, then the totals per kernel name.
 *
 *   deno run --allow-read=. --allow-env=DENO_WEBGPU_BACKEND bench/profile_step.ts [MODEL] [IMG] [CHANNELS] [BATCH]
 *
 * Needs the `timestamp-query` feature (lavapipe and llvmpipe GL have it).
 */
import { CompactTransformer } from "../lib/models/model.ts";
import { Activations, recordBackward } from "../lib/models/network.ts";
import { Plan } from "../lib/gpu/plan.ts";

const [name = "cct_2_3x2_32", img = "28", channels = "1", batch = "128"] = Deno.args;
const model = await CompactTransformer.create(name, { imgSize: Number(img), inChannels: Number(channels) });
const acts = new Activations(model.gpu, model.config, Number(batch), true);
const plan = new Plan(model.gpu, "profile");
const ctx = model.recordTrainingPass(plan, acts, false);
recordBackward(plan, ctx, model.gradients);
await plan.run(); // compiles and warms up
const runs = [await plan.profile(), await plan.profile(), await plan.profile()];
const median = runs[0].map((p, i) => ({
  name: p.name,
  ms: runs.map((r) => r[i].ms).sort((a, b) => a - b)[1],
}));
const byName = new Map<string, number>();
let total = 0;
for (const p of median) {
  total += p.ms;
  byName.set(p.name, (byName.get(p.name) ?? 0) + p.ms);
  if (p.ms > 4) console.log(p.name.padEnd(48), p.ms.toFixed(2));
}
console.log("---- per kernel name");
for (const [n, ms] of [...byName].sort((a, b) => b[1] - a[1])) console.log(n.padEnd(48), ms.toFixed(2));
console.log(`total ${total.toFixed(1)} ms in ${median.length} dispatches`);
