/** The training loop end to end on the embedded synthetic data set, with a tiny CCT. */
import { join } from "node:path";
import { CompactTransformer } from "../../lib/models/model.ts";
import { customConfig } from "../../lib/models/config.ts";
import { createSynthetic } from "../../lib/data/synthetic.ts";
import { modelEmaDecayAt, NonFiniteLossError, Trainer, type TrainOptions } from "../../lib/train/trainer.ts";
import { loadTrainingState, saveTrainingState } from "../../lib/train/checkpoint.ts";
import { writeTensor } from "../../lib/gpu/tensor.ts";
import { assertClose, assertEquals, assertRejects, assertThrows } from "../support/check.ts";

function tinyModel(classes: number, seed = 1) {
  const config = customConfig(
    { name: "tiny_cct", family: "cct", layers: 1, heads: 2, dim: 32, mlpRatio: 2 },
    {
      imgSize: 16,
      inChannels: 1,
      numClasses: classes,
      convLayers: 1,
    },
  );
  return CompactTransformer.create(config, { seed });
}

const options: Partial<TrainOptions> = { batchSize: 64, lr: 3e-3, warmupEpochs: 0.5, logEvery: 8 };

Deno.test("training a tiny CCT lowers the loss and beats chance by a wide margin", async () => {
  const data = createSynthetic({ seed: 1, trainSize: 2048, testSize: 512, size: 16, channels: 1 });
  const model = await tinyModel(data.classes.length);
  const losses: number[] = [];
  const trainer = new Trainer(model, data, { ...options, epochs: 4 }, {
    onProgress: (m) => losses.push(m.loss),
  });
  try {
    const last = (await trainer.run())!;
    assertEquals(trainer.state.globalStep, 4 * 32);
    const first = losses[0], final = losses[losses.length - 1];
    if (!(final < first - 0.6)) throw new Error(`loss went from ${first} to ${final}`);
    const test = last.test;
    if (!test) throw new Error("the last epoch was not evaluated");
    // 10 balanced classes: chance is 10%.
    if (!(test.top1 > 0.45)) throw new Error(`test accuracy ${test.top1}`);
    assertEquals(test.count, 512);
    assertEquals(test.confusion.flat().reduce((a, b) => a + b, 0), 512);
  } finally {
    trainer.destroy();
    model.destroy();
  }
});

Deno.test("evalEvery evaluates every n-th epoch and always the last, and best tracks evaluated epochs", async () => {
  const data = createSynthetic({ seed: 3, trainSize: 256, testSize: 64, size: 16, channels: 1 });
  for (const [evalEvery, expected] of [[2, [2, 4, 5]], [0, [5]], [1, [1, 2, 3, 4, 5]]] as const) {
    const model = await tinyModel(data.classes.length);
    const seen: { epoch: number; evaluated: boolean; best: number }[] = [];
    const trainer = new Trainer(model, data, { ...options, epochs: 5, evalEvery }, {
      onEpoch: (s, t) =>
        void seen.push({ epoch: s.epoch, evaluated: s.test !== undefined, best: t.state.bestTop1 }),
    });
    try {
      await trainer.run();
      assertEquals(seen.map((s) => s.epoch), [1, 2, 3, 4, 5]);
      assertEquals(
        seen.filter((s) => s.evaluated).map((s) => s.epoch),
        [...expected],
        `evalEvery ${evalEvery}`,
      );
      // Before the first evaluation nothing has set the best accuracy.
      assertEquals(seen[expected[0] - 2]?.best ?? 0, 0);
      if (!(seen[expected[0] - 1].best > 0)) throw new Error(`best after epoch ${expected[0]} is 0`);
    } finally {
      trainer.destroy();
      model.destroy();
    }
  }
  const model = await tinyModel(data.classes.length);
  try {
    for (const evalEvery of [-1, 1.5]) {
      assertThrows(
        () => new Trainer(model, data, { ...options, evalEvery }).destroy(),
        RangeError,
        "evalEvery",
      );
    }
  } finally {
    model.destroy();
  }
});

Deno.test("a resumed run continues exactly where the uninterrupted run goes", async () => {
  const data = createSynthetic({ seed: 2, trainSize: 512, testSize: 64, size: 16, channels: 1 });
  const o = { ...options, epochs: 2, mixup: 0.8, cutmix: 1, reprob: 0.25, modelEmaDecay: 0.9 };
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "resume_test_" });
  try {
    const straight = await tinyModel(data.classes.length);
    const a = new Trainer(straight, data, o);
    await a.run();
    const expected = await straight.getWeights();
    const expectedEma = (await a.emaWeights())!;
    a.destroy();
    straight.destroy();

    const first = await tinyModel(data.classes.length);
    const b = new Trainer(first, data, o);
    await b.trainEpoch();
    const path = await saveTrainingState(dir, b);
    b.destroy();
    first.destroy();

    const saved = await loadTrainingState(path);
    const resumed = await CompactTransformer.create(saved.info.config);
    await resumed.loadWeights(saved.weights);
    const c = new Trainer(resumed, data, saved.options);
    c.state = saved.state;
    c.setMoments(saved.m, saved.v);
    if (!saved.ema) throw new Error("the resume file holds no moving average");
    c.setEmaWeights(saved.ema);
    await c.run();
    assertEquals(c.state.globalStep, 2 * 8);
    const actual = await resumed.getWeights();
    for (const [name, value] of expected) assertEquals(actual.get(name), value, name);
    const actualEma = (await c.emaWeights())!;
    for (const [name, value] of expectedEma) assertEquals(actualEma.get(name), value, `ema ${name}`);
    c.destroy();
    resumed.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("modelEmaDecayAt copies at the first update, then decays, or warms up as timm's ModelEmaV3", () => {
  const fixed = { modelEmaDecay: 0.9998, modelEmaWarmup: false };
  const warm = { ...fixed, modelEmaWarmup: true };
  assertEquals([1, 2, 10_000].map((t) => modelEmaDecayAt(fixed, t)), [0, 0.9998, 0.9998]);
  // timm: 1 − (1 + t)^(−2/3) with t = update − 1, capped at the decay.
  assertEquals(modelEmaDecayAt(warm, 1), 0);
  assertClose("warm-up", [2, 101, 31_624, 10 ** 7].map((t) => modelEmaDecayAt(warm, t)), [
    1 - 2 ** (-2 / 3),
    1 - 101 ** (-2 / 3),
    0.999,
    0.9998,
  ], { atol: 1e-7, rtol: 0 });
});

Deno.test("the weights' moving average follows its recurrence, is scored beside them and never replaces them", async () => {
  // One step per epoch, so the weights after every step can be read back.
  const data = createSynthetic({ seed: 4, trainSize: 64, testSize: 64, size: 16, channels: 1 });
  const model = await tinyModel(data.classes.length);
  const decay = 0.6;
  const trainer = new Trainer(model, data, { ...options, epochs: 3, evalEvery: 0, modelEmaDecay: decay });
  try {
    const expected = new Map([...await model.getWeights()].map(([k, w]) => [k, Float64Array.from(w)]));
    let last;
    // As timm's ModelEmaV3: the first update takes the weights, later ones decay.
    for (const d of [0, decay, decay]) {
      last = await trainer.trainEpoch();
      for (const [name, w] of await model.getWeights()) {
        const e = expected.get(name)!;
        for (let i = 0; i < e.length; i++) e[i] = d * e[i] + (1 - d) * w[i];
      }
    }
    const ema = (await trainer.emaWeights())!;
    let moved = 0;
    for (const [name, e] of expected) {
      assertClose(`ema ${name}`, ema.get(name)!, e, { atol: 1e-6, rtol: 1e-5 });
      const w = (await model.getWeights()).get(name)!;
      moved = Math.max(moved, ...e.map((x, i) => Math.abs(x - w[i])));
    }
    if (!(moved > 1e-3)) throw new Error(`the average is indistinguishable from the weights (${moved})`);
    // Scored beside the weights; the best is the better of the two.
    if (!last?.test || !last.testEma) throw new Error("the last epoch lacks one of its two evaluations");
    if (last.test.loss === last.testEma.loss) throw new Error("both evaluations scored the same weights");
    assertEquals(trainer.state.bestTop1, Math.max(last.test.top1, last.testEma.top1));
    // withEmaWeights puts the weights back bit for bit, also when its work throws.
    const before = await model.getWeights();
    const inside = await trainer.withEmaWeights(() => model.getWeights());
    for (const [name, e] of ema) assertEquals(inside.get(name), e, `inside ${name}`);
    // Nested, the inner call finds the average in place and the outer one still restores the weights.
    const nested = await trainer.withEmaWeights(() => trainer.withEmaWeights(() => model.getWeights()));
    for (const [name, e] of ema) assertEquals(nested.get(name), e, `nested ${name}`);
    await assertRejects(() => trainer.withEmaWeights(() => Promise.reject(new Error("boom"))), Error, "boom");
    const after = await model.getWeights();
    for (const [name, w] of before) assertEquals(after.get(name), w, name);
  } finally {
    trainer.destroy();
    model.destroy();
  }
  const plain = await tinyModel(data.classes.length);
  try {
    for (const modelEmaDecay of [1, -0.1, NaN]) {
      assertThrows(
        () => new Trainer(plain, data, { ...options, modelEmaDecay }).destroy(),
        RangeError,
        "modelEmaDecay",
      );
    }
    const t = new Trainer(plain, data, options);
    assertEquals(await t.emaWeights(), undefined);
    await assertRejects(() => t.withEmaWeights(() => Promise.resolve()), Error, "no moving average");
    t.destroy();
  } finally {
    plain.destroy();
  }
});

Deno.test("a NaN loss stops training with NonFiniteLossError", async () => {
  const data = createSynthetic({ seed: 3, trainSize: 256, testSize: 64, size: 16, channels: 1 });
  const model = await tinyModel(data.classes.length);
  const trainer = new Trainer(model, data, { ...options, epochs: 1, lr: 1e30, warmupEpochs: 0, logEvery: 1 });
  try {
    await assertRejects(() => trainer.run(), NonFiniteLossError, "loss became");
  } finally {
    trainer.destroy();
    model.destroy();
  }
});

Deno.test("a model that diverges in an epoch without evaluation stops before onEpoch can save it", async () => {
  const data = createSynthetic({ seed: 3, trainSize: 256, testSize: 64, size: 16, channels: 1 });
  const model = await tinyModel(data.classes.length);
  const fc = model.params.get("classifier.fc.weight");
  let saved = 0;
  const trainer = new Trainer(model, data, { ...options, epochs: 2, evalEvery: 0 }, {
    // After the epoch's last loss was read: what an update that overflows in the last step leaves behind.
    onProgress: (m) => {
      if (m.step === m.steps) writeTensor(model.gpu, fc, new Float32Array(fc.size).fill(NaN));
    },
    onEpoch: () => void saved++,
  });
  try {
    await assertRejects(() => trainer.run(), NonFiniteLossError, "loss became");
    assertEquals(saved, 0);
    assertEquals(trainer.state.epoch, 0);
  } finally {
    trainer.destroy();
    model.destroy();
  }
});

Deno.test("a checkpoint write killed midway leaves the previous checkpoint loadable", async () => {
  // Kill the saving process the moment a temporary file shows up (fixed delays can all miss the write on a
  // loaded machine, where the GPU readback dominates a save); at least one kill must land inside a write (the
  // temporary file is left behind) and after every kill the resume file must load.
  let interrupted = 0;
  for (let attempt = 0; attempt < 8 && interrupted < 2; attempt++) {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "kill_test_" });
    try {
      const child = new Deno.Command("deno", {
        args: [
          "run",
          "--no-prompt",
          `--allow-read=${dir}`,
          `--allow-write=${dir}`,
          "--allow-env=DENO_WEBGPU_BACKEND",
          new URL("./_save_loop.ts", import.meta.url).pathname,
          dir,
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      while (!text.includes("saved 2")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the save loop ended early: ${text}`);
        text += value;
      }
      const hasTemporary = async () => {
        for await (const e of Deno.readDir(dir)) if (e.name.includes(".tmp-")) return true;
        return false;
      };
      const deadline = Date.now() + 20_000;
      while (!(await hasTemporary()) && Date.now() < deadline) {
        // poll: a save takes milliseconds, its temporary file lives through the write and the fsync
      }
      child.kill("SIGKILL");
      await child.status;
      await reader.cancel();
      if (await hasTemporary()) interrupted++;
      const state = await loadTrainingState(join(dir, "last.state.safetensors"));
      assertEquals(state.info.config.name, "tiny_cct");
      if (!(state.state.globalStep >= 2)) throw new Error(`unexpected state ${JSON.stringify(state.state)}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  if (interrupted === 0) throw new Error("no kill landed inside a write: the test proved nothing");
});
