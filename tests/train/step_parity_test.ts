/**
 * One and two AdamW steps of cct_2_3x2_32 against the official PyTorch training step (fixture
 * cct_2_3x2_32.train.safetensors: lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.05 on every parameter).
 */
import { CompactTransformer } from "../../lib/models/model.ts";
import { readSafetensorsFile } from "../../lib/io/safetensors.ts";
import { Plan } from "../../lib/gpu/plan.ts";
import { createTensor } from "../../lib/gpu/tensor.ts";
import { adamwUpdate, createAdamwHyper, setAdamwHyper, zero } from "../../lib/kernels/optimizer.ts";
import { assertClose, assertEquals } from "../support/check.ts";

const FIXTURES = new URL("../../../shared/fixtures/", import.meta.url);

Deno.test("two AdamW steps on the GPU match the official parameters within 1e-5", async () => {
  const step = await readSafetensorsFile(new URL("cct_2_3x2_32.train.safetensors", FIXTURES));
  const model = await CompactTransformer.create("cct_2_3x2_32", {
    dropout: 0,
    attentionDropout: 0,
    stochasticDepth: 0,
  });
  try {
    await model.loadWeights(new URL("cct_2_3x2_32.train.weights.safetensors", FIXTURES).pathname);
    const input = step.tensors.get("input")!;
    const shape = input.shape as [number, number, number, number];
    const labels = step.tensors.get("labels")!.data as Int32Array;
    const grads = model.gradients.whole();
    const m = createTensor(model.gpu, [grads.size], "m"), v = createTensor(model.gpu, [grads.size], "v");
    const hyper = createAdamwHyper(model.gpu);
    const plan = new Plan(model.gpu, "adamw");
    zero(plan, m);
    zero(plan, v);
    await plan.run();
    const update = new Plan(model.gpu, "adamw update");
    // The fixture decays every parameter (one PyTorch param group).
    adamwUpdate(update, model.params.whole().prefix([grads.size]), grads, m, v, hyper, {
      offset: 0,
      length: grads.size,
      decay: true,
    });
    let previous = await model.getWeights();
    for (const t of [1, 2]) {
      const result = await model.lossAndGradients(input.data as Float32Array, shape, labels);
      const lossKey = t === 1 ? "loss" : "loss_step2";
      assertClose(lossKey, [result.loss], step.tensors.get(lossKey)!.data, { atol: 0, rtol: 1e-5 });
      setAdamwHyper(hyper, 1e-3, 0.9, 0.999, 1e-8, 0.05, t);
      await update.run();
      const weights = await model.getWeights();
      assertEquals(weights.size, 31);
      const checkAgainst = previous;
      previous = weights;
      for (const [name, value] of weights) {
        if (name === "classifier.attention_pool.bias") {
          // Its gradient is exactly 0 (softmax is shift-invariant): both sides hold ~1e-8 of rounding noise that
          // Adam scales to a step of ±lr, so only the step's size is comparable, not its sign.
          const before = checkAgainst.get(name)![0] * (1 - 1e-3 * 0.05);
          assertEquals(
            Math.abs(value[0] - before) <= 1e-3 * 1.001,
            true,
            `${name} moved by ${value[0] - before}`,
          );
          continue;
        }
        assertClose(`adamw${t}.${name}`, value, step.tensors.get(`adamw${t}.${name}`)!.data, {
          atol: 1e-5,
          rtol: 0,
        });
      }
    }
  } finally {
    model.destroy();
  }
});
