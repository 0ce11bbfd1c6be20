/**
 * The training-mode backward (dropout, attention dropout, drop-path with fixed seeds) against finite differences
 * of the GPU loss itself: with the seeds fixed, the masks are fixed and the loss is a smooth function of the
 * parameters, so (L(θ + εv) − L(θ − εv)) / 2ε must equal ∇L·v.
 */
import { CompactTransformer } from "../../lib/models/model.ts";
import { Activations, recordBackward } from "../../lib/models/network.ts";
import { Plan } from "../../lib/gpu/plan.ts";
import { createTensor, writeTensor } from "../../lib/gpu/tensor.ts";
import { crossEntropyForwardBackward } from "../../lib/kernels/loss.ts";
import { zero } from "../../lib/kernels/optimizer.ts";
import { assertClose, randn } from "../support/check.ts";

Deno.test("training-mode gradients with dropout and drop-path match finite differences of the loss", async () => {
  // High rates make a wrong mask or scale in any backward path visible in the directional derivative.
  const model = await CompactTransformer.create("cct_2_3x2_32", {
    imgSize: 16,
    numClasses: 5,
    dropout: 0.3,
    attentionDropout: 0.3,
    stochasticDepth: 0.5,
    seed: 4,
  });
  const gpu = model.gpu, c = model.config, B = 8;
  try {
    const acts = new Activations(gpu, c, B, true);
    const labels = createTensor(gpu, [B], "labels"), losses = createTensor(gpu, [B], "losses");
    writeTensor(gpu, labels, Int32Array.from({ length: B }, (_, i) => i % 5));
    writeTensor(gpu, acts.get("input"), Float32Array.from(randn(B * 3 * 16 * 16, 5)));
    const plan = new Plan(gpu, "training pass");
    const ctx = model.recordTrainingPass(plan, acts, true);
    crossEntropyForwardBackward(plan, losses, acts.get("dlogits"), acts.get("logits"), labels, {
      batch: B,
      classes: 5,
    });
    zero(plan, model.gradients.whole());
    recordBackward(plan, ctx, model.gradients);
    model.setStepSeeds(11, 3);

    const weights = await model.getWeights();
    const [lossValues, gradsAll] = await plan.runAndRead([losses, model.gradients.whole()]);
    const mean = (x: Float32Array) => x.reduce((a, b) => a + b, 0) / x.length;
    const loss0 = mean(lossValues);
    const trainable = model.parameters().filter((p) => p.trainable);
    // Per tensor, two directions: its own gradient (sensitive to wrong scales) and a random one (sensitive to
    // gradient mass in the wrong places, which a dropped mask can hide from the first); then a random direction
    // over every parameter.
    const probes: [string, string | null, boolean][] = [
      "classifier.blocks.1.linear2.weight",
      "classifier.blocks.1.linear1.weight",
      "classifier.blocks.0.self_attn.proj.weight",
      "classifier.blocks.0.self_attn.qkv.weight",
      "classifier.positional_emb",
      "tokenizer.conv_layers.0.0.weight",
    ].flatMap((name): [string, string, boolean][] => [
      [`along ∂L/∂${name}`, name, false],
      [`${name} in a random direction`, name, true],
    ]);
    probes.push(["every parameter in a random direction", null, true]);
    for (const [label, only, random] of probes) {
      const direction = new Map<string, Float64Array>();
      let norm = 0;
      for (const p of trainable) {
        if (only !== null && p.name !== only) continue;
        const t = model.gradients.get(p.name);
        const g = gradsAll.subarray(t.offset / 4, t.offset / 4 + t.size);
        const v = random ? randn(t.size, 21 + t.offset) : Float64Array.from(g);
        direction.set(p.name, v);
        for (const x of v) norm += x * x;
      }
      norm = Math.sqrt(norm);
      let analytic = 0;
      for (const [name, v] of direction) {
        const t = model.gradients.get(name);
        for (let i = 0; i < t.size; i++) analytic += (gradsAll[t.offset / 4 + i] * v[i]) / norm;
      }
      // Random directions have small derivatives: a longer step keeps float32 rounding of the loss below them.
      const eps = random ? 1e-2 : 3e-3;
      const lossAt = async (sign: number) => {
        const shifted = new Map([...weights].map(([name, w]) => {
          const v = direction.get(name);
          const data = v ? w.map((x, i) => x + (sign * eps * v[i]) / norm) : w;
          return [name, { shape: model.parameters().find((p) => p.name === name)!.shape, data }];
        }));
        await model.loadWeights(shifted);
        return mean((await plan.runAndRead([losses]))[0]);
      };
      const numeric = ((await lossAt(1)) - (await lossAt(-1))) / (2 * eps);
      assertClose(`∇L·v ${label} (loss ${loss0.toFixed(4)})`, [analytic], [numeric], {
        atol: 2e-5,
        rtol: 1e-2,
      });
    }
  } finally {
    model.destroy();
  }
});
