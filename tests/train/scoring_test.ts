/** Evaluation scoring, the learning-rate schedule and the optimizer's parameter groups. */
import { learningRate, type ScheduleOptions } from "../../lib/train/schedule.ts";
import { optimizerRanges, parseRandAugment, Scoreboard } from "../../lib/train/trainer.ts";
import { CompactTransformer } from "../../lib/models/model.ts";
import { assertClose, assertEquals, assertThrows } from "../support/check.ts";

Deno.test("Scoreboard counts top-1, top-5, loss and the confusion matrix", () => {
  const s = new Scoreboard(6);
  // Sample 0: label 2 is the maximum. Sample 1: label 2 ranks 4th. Sample 2: label 5 ranks 6th.
  s.add(
    Float32Array.from([0, 1, 5, 2, 3, 4, 9, 8, 1, 7, 0, 0, 6, 5, 4, 3, 2, 1]),
    Int32Array.from([2, 2, 5]),
  );
  const r = s.result();
  assertEquals(r.count, 3);
  assertClose("top-1", [r.top1], [1 / 3], { atol: 1e-12, rtol: 0 });
  assertClose("top-5", [r.top5], [2 / 3], { atol: 1e-12, rtol: 0 });
  const ce = (row: number[], label: number) =>
    Math.log(row.reduce((a, x) => a + Math.exp(x), 0)) - row[label];
  const expected = (ce([0, 1, 5, 2, 3, 4], 2) + ce([9, 8, 1, 7, 0, 0], 2) + ce([6, 5, 4, 3, 2, 1], 5)) / 3;
  assertClose("loss", [r.loss], [expected], { atol: 1e-6, rtol: 1e-6 });
  assertEquals(r.confusion[2][2], 1);
  assertEquals(r.confusion[2][0], 1);
  assertEquals(r.confusion[5][0], 1);
});

Deno.test("Scoreboard never scores ties or non-finite logits as correct", () => {
  const s = new Scoreboard(3);
  s.add(Float32Array.from([1, 1, 1, NaN, NaN, NaN, 0, Infinity, 0]), Int32Array.from([2, 0, 1]));
  const r = s.result();
  // A tie ranks the label below every smaller class index: label 2 of three equal logits is third.
  assertEquals(r.top1, 0);
  assertEquals(Number.isNaN(r.loss), true);
  assertEquals(new Scoreboard(3).result(), {
    loss: 0,
    top1: 0,
    top5: 0,
    confusion: [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
    count: 0,
  });
});

Deno.test("the schedule is timm's: warm-up, a cosine over the epochs from t = 0, then cool-down", () => {
  const o: ScheduleOptions = {
    lr: 1e-3,
    minLr: 1e-5,
    epochs: 10,
    warmupEpochs: 2,
    warmupLr: 1e-6,
    cooldownEpochs: 3,
  };
  assertClose("t=0", [learningRate(o, 0)], [1e-6], { atol: 0, rtol: 1e-12 });
  assertClose("t=1", [learningRate(o, 1)], [(1e-6 + 1e-3) / 2], { atol: 0, rtol: 1e-12 });
  const cosine = (t: number) => 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + Math.cos((Math.PI * t) / 10));
  for (const t of [2, 5, 9.5]) {
    assertClose(`t=${t}`, [learningRate(o, t)], [cosine(t)], { atol: 0, rtol: 1e-12 });
  }
  for (const t of [10, 12.9]) assertEquals(learningRate(o, t), 1e-5);
});

Deno.test("RandAugment policies parse as timm writes them", () => {
  assertEquals(parseRandAugment("rand-m9-mstd0.5-inc1"), { magnitude: 9, magnitudeStd: 0.5 });
  assertEquals(parseRandAugment("rand-m7"), { magnitude: 7, magnitudeStd: 0 });
  assertThrows(() => parseRandAugment("auto-m9"), RangeError, "expected rand-m");
  assertThrows(() => parseRandAugment("rand-m9-inc0"), RangeError, "only inc1");
});

Deno.test("the optimizer's two ranges hold exactly the decayed and the other trainable parameters", async () => {
  const model = await CompactTransformer.create("vit_2_4_32_sine");
  try {
    const { decayed, plain } = optimizerRanges(model);
    const grads = model.gradients;
    for (const p of model.parameters()) {
      if (!p.trainable) continue;
      const t = grads.get(p.name);
      const start = t.offset / 4, end = start + t.size;
      const range = p.decay ? decayed : plain;
      const inside = start >= range.offset && end <= range.offset + range.length;
      assertEquals(inside, true, `${p.name} (decay ${p.decay}) lies in its range`);
      assertEquals(p.decay, p.shape.length > 1, `${p.name}: decay exactly the ≥ 2-D tensors`);
    }
    assertEquals(decayed.offset + decayed.length <= plain.offset, true);
  } finally {
    model.destroy();
  }
});
