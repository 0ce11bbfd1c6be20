import * as ref from "../reference/loss.ts";
import {
  accumulateMetrics,
  crossEntropyForwardBackward,
  METRICS,
  METRICS_SIZE,
  summarizeMetrics,
} from "../../lib/kernels/loss.ts";
import { Plan } from "../../lib/gpu/plan.ts";
import { readTensor, uploadTensor } from "../../lib/gpu/tensor.ts";
import {
  assertClose,
  checkGradients,
  expectTensor,
  poisoned,
  randn,
  randu,
  rng,
  runPlan,
  testGpu,
  upload,
} from "../support/check.ts";

const FIXTURE = new URL("../../../shared/fixtures/cct_2_3x2_32.train.safetensors", import.meta.url);

/** Reads the F32/I32 tensors of a safetensors file (8-byte LE header length, JSON header, raw little-endian data). */
async function readSafetensors(url: URL): Promise<Map<string, Float32Array | Int32Array>> {
  const bytes = await Deno.readFile(url);
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const out = new Map<string, Float32Array | Int32Array>();
  for (
    const [name, info] of Object.entries(header) as [string, { dtype: string; data_offsets: number[] }][]
  ) {
    if (name === "__metadata__") continue;
    const raw = bytes.slice(8 + headerLength + info.data_offsets[0], 8 + headerLength + info.data_offsets[1]);
    if (info.dtype === "F32") out.set(name, new Float32Array(raw.buffer));
    else if (info.dtype === "I32") out.set(name, new Int32Array(raw.buffer));
  }
  return out;
}

function randomLabels(batch: number, classes: number, seed: number): Int32Array {
  const u = rng(seed);
  return Int32Array.from({ length: batch }, () => Math.floor(u() * classes));
}

/** Random probability rows (each sums to 1), as mixup/cutmix produce. */
function randomSoftTargets(batch: number, classes: number, seed: number): Float64Array {
  const t = randu(batch * classes, seed, 0, 1);
  for (let b = 0; b < batch; b++) {
    let s = 0;
    for (let c = 0; c < classes; c++) s += t[b * classes + c];
    for (let c = 0; c < classes; c++) t[b * classes + c] = Math.fround(t[b * classes + c] / s);
  }
  return t;
}

// Losses are O(log C); dlogits are (softmax − target)·gradScale with gradScale up to 1.
const LOSS_TOL = { atol: 2e-5, rtol: 2e-5 };
const DLOGITS_TOL = { atol: 2e-7, rtol: 1e-4 };

Deno.test("reference cross-entropy gives log 2 for two equal logits and PyTorch's smoothed value", () => {
  const plain = ref.crossEntropyForwardBackward([0, 0], [1], { batch: 1, classes: 2 });
  assertClose("loss of equal logits", plain.losses, [Math.LN2], { atol: 1e-15, rtol: 1e-15 });
  // PyTorch: (1−ε)·nll + ε·mean_c(−logp_c), logits [1, 2, 3], label 2, ε = 0.1.
  const logp = [1, 2, 3].map((x) => x - Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)));
  const expected = 0.9 * -logp[2] + 0.1 * -(logp[0] + logp[1] + logp[2]) / 3;
  const smoothed = ref.crossEntropyForwardBackward([1, 2, 3], [2], { batch: 1, classes: 3, smoothing: 0.1 });
  assertClose("smoothed loss", smoothed.losses, [expected], { atol: 1e-15, rtol: 1e-14 });
});

Deno.test("reference cross-entropy backward matches finite differences for hard and soft targets", () => {
  const batch = 3, classes = 7;
  const logits = randn(batch * classes, 1, 2);
  const labels = Float64Array.from(randomLabels(batch, classes, 2));
  const hard = { batch, classes, smoothing: 0.1, gradScale: 0.5 };
  checkGradients(
    "cross-entropy (hard, smoothing 0.1)",
    ([x]) => ref.crossEntropyScaledLoss(x, labels, hard),
    [logits],
    [ref.crossEntropyForwardBackward(logits, labels, hard).dlogits],
  );
  // Unnormalised soft targets: the gradient must carry the softmax·Σt term.
  const targets = randu(batch * classes, 3, 0, 1);
  const soft = { batch, classes, smoothing: 0.1, soft: true, gradScale: 0.25 };
  checkGradients(
    "cross-entropy (soft, unnormalised)",
    ([x]) => ref.crossEntropyScaledLoss(x, targets, soft),
    [logits],
    [ref.crossEntropyForwardBackward(logits, targets, soft).dlogits],
  );
});

const cases: { batch: number; classes: number; smoothing: number; soft: boolean }[] = [
  { batch: 1, classes: 1, smoothing: 0, soft: false },
  { batch: 1, classes: 10, smoothing: 0.1, soft: false },
  { batch: 7, classes: 10, smoothing: 0, soft: false },
  { batch: 130, classes: 10, smoothing: 0.1, soft: false },
  { batch: 13, classes: 1000, smoothing: 0.1, soft: false },
  { batch: 1, classes: 1000, smoothing: 0, soft: true },
  { batch: 65, classes: 10, smoothing: 0.1, soft: true },
  { batch: 1024, classes: 10, smoothing: 0.1, soft: false },
];

for (const { batch, classes, smoothing, soft } of cases) {
  Deno.test(
    `crossEntropyForwardBackward matches the reference (B=${batch}, C=${classes}, ε=${smoothing}, ` +
      `${soft ? "soft targets" : "hard labels"})`,
    async () => {
      const gpu = await testGpu();
      const seed = batch * 31 + classes + (soft ? 7 : 0);
      // Large offsets check the max-shift; scale 4 makes confident and unsure rows.
      const logits = randn(batch * classes, seed, 4).map((x, i) => Math.fround(x + (i % 3) * 30));
      const targets = soft
        ? randomSoftTargets(batch, classes, seed + 1)
        : randomLabels(batch, classes, seed + 1);
      const options = { batch, classes, smoothing, soft, gradScale: 1 / batch };
      const expected = ref.crossEntropyForwardBackward(logits, targets, options);
      const losses = poisoned(gpu, [batch], "losses"), dlogits = poisoned(gpu, [batch, classes], "dlogits");
      const targetTensor = soft
        ? upload(gpu, targets as Float64Array, [batch, classes], "targets")
        : uploadTensor(gpu, targets as Int32Array, [batch], "labels");
      await runPlan(gpu, (plan) =>
        crossEntropyForwardBackward(
          plan,
          losses,
          dlogits,
          upload(gpu, logits, [batch, classes], "logits"),
          targetTensor,
          options,
        ));
      await expectTensor(gpu, "losses", losses, expected.losses, LOSS_TOL);
      await expectTensor(gpu, "dlogits", dlogits, expected.dlogits, {
        atol: DLOGITS_TOL.atol,
        rtol: DLOGITS_TOL.rtol,
      });
    },
  );
}

Deno.test("crossEntropyForwardBackward gives ignored rows (labels outside [0, C)) zero loss and gradient", async () => {
  const gpu = await testGpu();
  const batch = 5, classes = 6;
  const logits = randn(batch * classes, 11);
  const labels = Int32Array.from([2, -1, 5, 6, -100]);
  const options = { batch, classes, smoothing: 0.1, gradScale: 1 };
  const expected = ref.crossEntropyForwardBackward(logits, labels, options);
  const losses = poisoned(gpu, [batch]), dlogits = poisoned(gpu, [batch, classes]);
  await runPlan(gpu, (plan) =>
    crossEntropyForwardBackward(
      plan,
      losses,
      dlogits,
      upload(gpu, logits, [batch, classes]),
      uploadTensor(gpu, labels, [batch], "labels"),
      options,
    ));
  const got = await readTensor(gpu, losses);
  assertClose("ignored losses", [got[1], got[3], got[4]], [0, 0, 0], { atol: 0, rtol: 0 });
  await expectTensor(gpu, "losses", losses, expected.losses, LOSS_TOL);
  await expectTensor(gpu, "dlogits", dlogits, expected.dlogits, DLOGITS_TOL);
});

Deno.test("crossEntropyForwardBackward reproduces PyTorch's mean loss on the fixture's logits", async () => {
  const gpu = await testGpu();
  const fixture = await readSafetensors(FIXTURE);
  const logits = fixture.get("logits") as Float32Array, labels = fixture.get("labels") as Int32Array;
  const batch = labels.length, classes = logits.length / batch;
  const losses = poisoned(gpu, [batch]), dlogits = poisoned(gpu, [batch, classes]);
  await runPlan(gpu, (plan) =>
    crossEntropyForwardBackward(
      plan,
      losses,
      dlogits,
      uploadTensor(gpu, logits, [batch, classes], "logits"),
      uploadTensor(gpu, labels, [batch], "labels"),
      { batch, classes },
    ));
  const mean = (await readTensor(gpu, losses)).reduce((s, l) => s + l, 0) / batch;
  assertClose("mean loss", [mean], fixture.get("loss")!, { atol: 0, rtol: 1e-6 });
});

Deno.test("crossEntropyForwardBackward rejects mismatched shapes naming the tensor", async () => {
  const gpu = await testGpu();
  const plan = new Plan(gpu, "shapes");
  let message = "";
  try {
    crossEntropyForwardBackward(
      plan,
      poisoned(gpu, [4], "losses"),
      poisoned(gpu, [4, 10], "dlogits"),
      poisoned(gpu, [4, 9], "logits"),
      uploadTensor(gpu, new Int32Array(4), [4], "labels"),
      { batch: 4, classes: 10 },
    );
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    message = e.message;
  }
  if (!message.includes("logits has 36")) {
    throw new Error(`expected a TypeError naming logits, got "${message}"`);
  }
  plan.destroy();
});

for (
  const { batch, classes, soft } of [
    { batch: 1, classes: 1000, soft: false },
    { batch: 130, classes: 10, soft: false },
    { batch: 1024, classes: 10, soft: false },
    { batch: 67, classes: 10, soft: true },
  ]
) {
  Deno.test(
    `accumulateMetrics adds loss, correct and count over two batches (B=${batch}, C=${classes}, ` +
      `${soft ? "soft" : "hard"})`,
    async () => {
      const gpu = await testGpu();
      const seed = batch + classes;
      // Few distinct logit values so ties occur: the first maximum must win on both sides.
      const logits = randu(batch * classes, seed, 0, 4).map(Math.floor);
      const labels = soft
        ? randomSoftTargets(batch, classes, seed + 1)
        : randomLabels(batch, classes, seed + 1);
      if (!soft) (labels as Int32Array)[0] = -1; // an ignored (padding) row
      const losses = randu(batch, seed + 2, 0, 3);
      const start = [1.5, 2, 3, 0];
      const metrics = upload(gpu, Float64Array.from(start), [4], "metrics");
      const labelTensor = soft
        ? upload(gpu, labels as Float64Array, [batch, classes], "targets")
        : uploadTensor(gpu, labels as Int32Array, [batch], "labels");
      const logitTensor = upload(gpu, logits, [batch, classes], "logits");
      const lossTensor = upload(gpu, losses, [batch], "losses");
      await runPlan(gpu, (plan) => {
        for (let k = 0; k < 2; k++) {
          accumulateMetrics(plan, metrics, lossTensor, logitTensor, labelTensor, { batch, classes, soft });
        }
      });
      const options = { batch, classes, soft };
      const once = ref.accumulateMetrics(start.slice(0, METRICS_SIZE), losses, logits, labels, options);
      const twice = ref.accumulateMetrics(once, losses, logits, labels, options);
      const got = await readTensor(gpu, metrics);
      assertClose("loss sum", [got[METRICS.lossSum]], [twice[0]], { atol: 1e-4, rtol: 1e-6 });
      assertClose("correct, count", [got[METRICS.correct], got[METRICS.count]], [twice[1], twice[2]], {
        atol: 0,
        rtol: 0,
      });
      assertClose("slot past the metrics", [got[3]], [0], { atol: 0, rtol: 0 });
    },
  );
}

Deno.test("summarizeMetrics turns the metrics buffer into mean loss and accuracy", () => {
  const summary = summarizeMetrics([6, 3, 4]);
  assertClose("mean loss, accuracy, count", [summary.meanLoss, summary.accuracy, summary.count], [
    1.5,
    0.75,
    4,
  ], {
    atol: 0,
    rtol: 0,
  });
  if (!Number.isNaN(summarizeMetrics([0, 0, 0]).accuracy)) throw new Error("empty metrics should give NaN");
});
