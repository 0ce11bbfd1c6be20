import * as ref from "../reference/augment.ts";
import {
  AUGMENT_PARAM_WORDS,
  augmentImages,
  type AugmentOptions,
  MIX_PARAM_WORDS,
  mixBatch,
  type MixBatchOptions,
  type MixSample,
  packPixels,
  RAND_AUGMENT_OPS,
  type RandAugmentOp,
  sampleMix,
  writeMixParams,
} from "../../lib/kernels/augment.ts";
import type { Gpu } from "../../lib/gpu/device.ts";
import { Plan, UniformBlock } from "../../lib/gpu/plan.ts";
import { createTensor, readTensor, readTensorInt, type Tensor, uploadTensor } from "../../lib/gpu/tensor.ts";
import { deriveSeed } from "../../lib/gpu/random.ts";
import { RAND_AUGMENT_SKIP } from "../../shaders/augment.ts";
import {
  assertClose,
  assertEquals,
  assertThrows,
  expectTensor,
  poisoned,
  randn,
  rng,
  runPlan,
  testGpu,
  upload,
} from "../support/check.ts";

// Outputs are O(1) (normalised pixels, standard-normal noise); float32 arithmetic against float64.
const TOL = { atol: 1e-5, rtol: 1e-5 };

const CIFAR = { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] };
const MNIST = { mean: [0.1307], std: [0.3081] };

function norm(channels: number) {
  return channels === 3 ? CIFAR : channels === 1 ? MNIST : {
    mean: Array.from({ length: channels }, (_, c) => 0.3 + 0.05 * c),
    std: Array.from({ length: channels }, (_, c) => 0.2 + 0.03 * c),
  };
}

function randomBytes(n: number, seed: number): Uint8Array {
  const u = rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(u() * 256));
}

function uploadPixels(gpu: Gpu, bytes: Uint8Array): Tensor {
  const words = packPixels(bytes);
  return uploadTensor(gpu, words, [words.length], "pixels");
}

/** A u32 tensor filled with 0xffffffff, so a parameter the kernel forgets to write shows. */
function poisonedWords(gpu: Gpu, n: number, label: string): Tensor {
  const t = createTensor(gpu, [n], label);
  gpu.device.queue.writeBuffer(t.buffer, t.offset, new Uint32Array(n).fill(0xffffffff));
  return t;
}

async function readWords(gpu: Gpu, t: Tensor): Promise<Uint32Array> {
  return new Uint32Array((await readTensorInt(gpu, t)).buffer);
}

/** Scratch tensors for RandAugment at these sizes. */
function randAugmentTensors(gpu: Gpu, o: { batch: number; channels: number; height: number; width: number }) {
  const n = o.batch * o.channels * o.height * o.width;
  return {
    scratch: [poisoned(gpu, [n], "scratch 0"), poisoned(gpu, [n], "scratch 1")] as const,
    lut: poisonedWords(gpu, o.batch * o.channels * 256, "lut"),
  };
}

/** Per-sample parameters: every word equal, except RandAugment's float arguments (words 11, 13) to 1e-6. */
function checkParams(what: string, got: Uint32Array, expected: Uint32Array): void {
  const isArg = (i: number) => [11, 13].includes(i % AUGMENT_PARAM_WORDS);
  assertEquals(
    Array.from(got, (v, i) => isArg(i) ? 0 : v),
    Array.from(expected, (v, i) => isArg(i) ? 0 : v),
    `${what}: per-sample parameters`,
  );
  const args = (p: Uint32Array) => Array.from(p, (v, i) => isArg(i) ? ref.bitsFloat(v) : 0);
  assertClose(`${what}: RandAugment arguments`, args(got), args(expected), { atol: 1e-6, rtol: 1e-6 });
}

/**
 * Asserts GPU and reference images agree within TOL except on at most `maxFraction` of the elements: RandAugment
 * quantises to 0..255 after float arithmetic (bilinear affine sampling, enhancement blends), and float32 (GPU)
 * against float64 (reference) can land on either side of a rounding boundary, rarely.
 */
function assertMostlyClose(
  name: string,
  got: Float32Array,
  expected: Float64Array,
  maxFraction: number,
): void {
  const bad: number[] = [];
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(got[i] - expected[i]) <= TOL.atol + TOL.rtol * Math.abs(expected[i]))) bad.push(i);
  }
  if (bad.length > maxFraction * expected.length || bad.some((i) => Number.isNaN(got[i]))) {
    const show = bad.slice(0, 6).map((i) => `[${i}] got ${got[i]}, expected ${expected[i]}`).join("\n  ");
    throw new Error(`${name}: ${bad.length} of ${expected.length} elements differ\n  ${show}`);
  }
  if (bad.length > 0) {
    console.log(`${name}: ${bad.length} of ${expected.length} elements on another rounding side`);
  }
}

/** Runs augmentImages once; checks the per-sample parameters and the images elementwise. */
async function checkAugment(
  gpu: Gpu,
  o: AugmentOptions,
  seed: number,
  what: string,
  maxFraction = 0,
  bytes = randomBytes(o.batch * o.channels * o.height * o.width, seed + 1),
): Promise<Uint32Array> {
  const { batch, channels, height, width } = o;
  const out = poisoned(gpu, [batch, channels, height, width], "out");
  const params = poisonedWords(gpu, batch * AUGMENT_PARAM_WORDS, "params");
  await runPlan(gpu, (plan) => augmentImages(plan, out, uploadPixels(gpu, bytes), params, { ...o, seed }));
  const gotParams = await readWords(gpu, params);
  checkParams(what, gotParams, ref.sampleParams(o, seed));
  // The GPU's float32 RandAugment arguments, so both sides blend with the same factors.
  const expected = ref.augmentImages(bytes, o, seed, gotParams);
  if (maxFraction === 0) await expectTensor(gpu, `${what}: images`, out, expected, TOL);
  else assertMostlyClose(`${what}: images`, await readTensor(gpu, out), expected, maxFraction);
  return gotParams;
}

const shapes: [number, number, number, number][] = [[1, 1, 28, 28], [5, 3, 32, 32], [5, 3, 7, 5], [
  1,
  3,
  7,
  5,
]];

Deno.test("reference roundHalfEven rounds halves to even like Python and WGSL", () => {
  assertEquals([0.5, 1.5, 2.5, -0.5, 2.4, 2.6, 3].map(ref.roundHalfEven), [0, 2, 2, -0, 2, 3, 3]);
});

for (const [batch, channels, height, width] of shapes) {
  const shape = `${batch}×${channels}×${height}×${width}`;
  const base = { batch, channels, height, width, ...norm(channels) };

  Deno.test(`padded random crop, flip and normalise match the reference (${shape})`, async () => {
    const gpu = await testGpu();
    await checkAugment(gpu, { ...base, pad: 4, flip: true }, 11 + batch, "pad 4 + flip");
    await checkAugment(gpu, { ...base, pad: 2 }, 12 + batch, "pad 2, no flip");
  });

  Deno.test(`random resized crop with flip matches the reference (${shape})`, async () => {
    const gpu = await testGpu();
    await checkAugment(gpu, { ...base, resizedCrop: true, flip: true }, 21 + height, "scale 0.8–1");
    await checkAugment(
      gpu,
      { ...base, resizedCrop: { scaleMin: 0.08, scaleMax: 1 }, flip: true },
      22 + height,
      "scale 0.08–1",
    );
  });

  Deno.test(`random erasing after crop, flip and normalise matches the reference (${shape})`, async () => {
    const gpu = await testGpu();
    const p = await checkAugment(gpu, { ...base, resizedCrop: true, flip: true, reprob: 1 }, 31, "reprob 1");
    // With reprob 1 a box is found within 10 attempts on all but the tiniest images.
    if (height * width > 100) {
      for (let b = 0; b < batch; b++) {
        const h = p[b * AUGMENT_PARAM_WORDS + 7], w = p[b * AUGMENT_PARAM_WORDS + 8];
        if (!(h * w >= 1 && h < height && w < width)) throw new Error(`sample ${b}: erase box ${h}×${w}`);
      }
    }
    await checkAugment(gpu, { ...base, pad: 3, reprob: 0.5 }, 32, "pad 3, reprob 0.5");
  });

  Deno.test(`evaluation mode (every option off) is exactly normalise(u8/255) (${shape})`, async () => {
    const gpu = await testGpu();
    const n = batch * channels * height * width;
    const bytes = randomBytes(n, 5);
    const out = poisoned(gpu, [n], "out");
    const element = poisoned(gpu, [n], "element");
    await runPlan(gpu, (plan) => {
      augmentImages(plan, out, uploadPixels(gpu, bytes), null, base);
      augmentImages(plan, element, uploadPixels(gpu, bytes), null, { ...base, variant: "element" });
    });
    const expected = new Float64Array(n);
    const { mean, std } = norm(channels);
    for (let i = 0; i < n; i++) {
      const c = Math.floor(i / (height * width)) % channels;
      expected[i] = (bytes[i] / 255 - Math.fround(mean[c])) / Math.fround(std[c]);
    }
    await expectTensor(gpu, "normalised", out, expected, TOL);
    await expectTensor(gpu, "normalised (per element)", element, expected, TOL);
  });
}

for (const op of RAND_AUGMENT_OPS) {
  Deno.test(`RandAugment ${op} matches the PIL-semantics reference after a flip`, async () => {
    const gpu = await testGpu();
    for (const [batch, channels, height, width] of [[3, 3, 20, 19], [2, 1, 24, 22]]) {
      const o = { batch, channels, height, width, ...norm(channels), flip: true };
      const ra = { ...randAugmentTensors(gpu, o), ops: [op], prob: 1 };
      // Low contrast (40..199), so that AutoContrast and Equalize have work to do.
      const bytes = randomBytes(batch * channels * height * width, 40 + channels).map((v) => 40 + (v % 160));
      const what = `${op} ${channels} ch`;
      const p = await checkAugment(gpu, { ...o, randAugment: ra }, 40 + channels, what, 0.002, bytes);
      const unchanged = ref.augmentImages(bytes, o, 40 + channels);
      // One layer (two Inverts cancel): the op must change the image (Color cannot on one channel).
      const once = p.map((v, i) => i % AUGMENT_PARAM_WORDS === 12 ? RAND_AUGMENT_SKIP : v);
      const changed = ref.augmentImages(bytes, { ...o, randAugment: ra }, 40 + channels, once);
      const same = changed.every((v, i) => v === unchanged[i]);
      if (same !== (op === "ColorIncreasing" && channels === 1)) {
        throw new Error(`${what}: the op changed nothing`);
      }
      for (let b = 0; b < batch; b++) {
        for (const w of [10, 12]) {
          if (p[b * AUGMENT_PARAM_WORDS + w] !== RAND_AUGMENT_OPS.indexOf(op)) {
            throw new Error(`sample ${b}: op ${w}`);
          }
        }
      }
    }
  });
}

Deno.test("the SPEC recipe (resized crop, flip, rand-m9-mstd0.5-inc1, erasing 0.25) matches the reference", async () => {
  const gpu = await testGpu();
  const o = {
    batch: 5,
    channels: 3,
    height: 32,
    width: 32,
    ...CIFAR,
    resizedCrop: true,
    flip: true,
    reprob: 0.25,
  };
  const p = await checkAugment(gpu, { ...o, randAugment: randAugmentTensors(gpu, o) }, 50, "recipe", 0.002);
  const ops = Array.from(
    { length: 5 },
    (_, b) => [p[b * AUGMENT_PARAM_WORDS + 10], p[b * AUGMENT_PARAM_WORDS + 12]],
  );
  if (!ops.flat().some((op) => op !== RAND_AUGMENT_SKIP)) throw new Error("no RandAugment op was applied");
});

Deno.test("RandAugment picks ops uniformly, applies each layer half the time, magnitudes around 9", async () => {
  const gpu = await testGpu();
  const batch = 3000;
  const o = { batch, channels: 1, height: 4, width: 4, ...MNIST };
  const params = poisonedWords(gpu, batch * AUGMENT_PARAM_WORDS, "params");
  const n = batch * 16;
  await runPlan(
    gpu,
    (plan) =>
      augmentImages(plan, poisoned(gpu, [n]), uploadPixels(gpu, new Uint8Array(n)), params, {
        ...o,
        seed: 6,
        randAugment: randAugmentTensors(gpu, o),
      }),
  );
  const p = await readWords(gpu, params);
  const counts = new Array(RAND_AUGMENT_OPS.length).fill(0);
  let skipped = 0;
  const rotations: number[] = [];
  for (let b = 0; b < batch; b++) {
    for (const l of [0, 1]) {
      const op = p[b * AUGMENT_PARAM_WORDS + 10 + 2 * l];
      if (op === RAND_AUGMENT_SKIP) skipped++;
      else counts[op]++;
      if (op === 3) rotations.push(Math.abs(ref.bitsFloat(p[b * AUGMENT_PARAM_WORDS + 11 + 2 * l])));
    }
  }
  // 6000 layers: skip rate sd ≈ 0.0065; each op ≈ 200 applications (sd ≈ 14).
  if (Math.abs(skipped / 6000 - 0.5) > 0.03) throw new Error(`skip rate ${skipped / 6000}`);
  for (const [op, c] of counts.entries()) {
    if (Math.abs(c - 200) > 70) throw new Error(`${RAND_AUGMENT_OPS[op]} applied ${c} times`);
  }
  // Rotation degrees = 3·magnitude, magnitude ~ N(9, 0.5): mean 27.
  const mean = rotations.reduce((a, b) => a + b, 0) / rotations.length;
  if (Math.abs(mean - 27) > 0.5) throw new Error(`mean rotation ${mean}`);
});

Deno.test("the per-element and naive (draws recomputed per element) variants equal the per-row kernel", async () => {
  const gpu = await testGpu();
  const o = {
    batch: 3,
    channels: 3,
    height: 9,
    width: 11,
    ...CIFAR,
    resizedCrop: true,
    flip: true,
    reprob: 0.7,
  };
  const n = 3 * 3 * 9 * 11, seed = 77;
  const bytes = randomBytes(n, 3);
  const fast = poisoned(gpu, [n], "fast"), naive = poisoned(gpu, [n], "naive");
  const element = poisoned(gpu, [n], "element");
  const pixels = uploadPixels(gpu, bytes);
  await runPlan(gpu, (plan) => {
    augmentImages(plan, fast, pixels, createTensor(gpu, [3 * AUGMENT_PARAM_WORDS], "params"), { ...o, seed });
    augmentImages(plan, naive, pixels, null, { ...o, seed, variant: "naive" });
    const params = createTensor(gpu, [3 * AUGMENT_PARAM_WORDS], "params2");
    augmentImages(plan, element, pixels, params, { ...o, seed, variant: "element" });
  });
  const expected = ref.augmentImages(bytes, o, seed);
  await expectTensor(gpu, "fast", fast, expected, TOL);
  await expectTensor(gpu, "naive", naive, expected, TOL);
  await expectTensor(gpu, "per element", element, expected, TOL);
});

Deno.test("augmentation is deterministic for a seed and reads a per-step seed from a UniformBlock", async () => {
  const gpu = await testGpu();
  const o = { batch: 4, channels: 3, height: 8, width: 8, ...CIFAR, pad: 2, flip: true, reprob: 0.5 };
  const n = 4 * 3 * 8 * 8;
  const bytes = randomBytes(n, 9);
  const seeds = new UniformBlock(gpu, 8, "seeds");
  const out = poisoned(gpu, [n], "out");
  const params = createTensor(gpu, [4 * AUGMENT_PARAM_WORDS], "params");
  const plan = new Plan(gpu, "augment steps");
  augmentImages(plan, out, uploadPixels(gpu, bytes), params, { ...o, seed: { block: seeds, word: 6 } });
  const runs: Float32Array[] = [];
  for (const step of [0, 1, 0]) {
    const seed = deriveSeed(42, step, 3);
    seeds.u32.fill(0xdeadbeef); // the other words must not be read
    seeds.u32[6] = seed;
    seeds.flush();
    await plan.run();
    const got = await readTensor(gpu, out);
    assertClose(`step ${step}`, got, ref.augmentImages(bytes, o, seed), TOL);
    runs.push(got);
  }
  plan.destroy();
  assertEquals(Array.from(runs[2]), Array.from(runs[0]), "the same seed gives the same images");
  if (runs[1].every((v, i) => v === runs[0][i])) throw new Error("two steps gave identical images");
});

Deno.test("over many samples the flip rate is about 0.5 and crop offsets cover [0, 2·pad] evenly", async () => {
  const gpu = await testGpu();
  const batch = 6000, pad = 4;
  const o = { batch, channels: 1, height: 2, width: 2, ...MNIST, pad, flip: true };
  const params = poisonedWords(gpu, batch * AUGMENT_PARAM_WORDS, "params");
  const out = poisoned(gpu, [batch * 4], "out");
  await runPlan(
    gpu,
    (plan) =>
      augmentImages(plan, out, uploadPixels(gpu, new Uint8Array(batch * 4)), params, { ...o, seed: 5 }),
  );
  const p = await readWords(gpu, params);
  let flips = 0;
  const counts = new Array(2 * pad + 1).fill(0);
  for (let b = 0; b < batch; b++) {
    flips += p[b * AUGMENT_PARAM_WORDS + 4];
    for (const k of [0, 1]) {
      const off = p[b * AUGMENT_PARAM_WORDS + k];
      if (off > 2 * pad) throw new Error(`sample ${b}: offset ${off} outside [0, ${2 * pad}]`);
      counts[off]++;
    }
  }
  // Binomial standard deviation √(0.25/6000) ≈ 0.0065: ±0.03 is over four of them.
  if (Math.abs(flips / batch - 0.5) > 0.03) throw new Error(`flip rate ${flips / batch}`);
  // Each of the 9 offsets expects 12000/9 ≈ 1333 (sd ≈ 34): within ±150.
  for (const [off, c] of counts.entries()) {
    if (Math.abs(c - (2 * batch) / counts.length) > 150) throw new Error(`offset ${off} drawn ${c} times`);
  }
});

Deno.test("random resized crops stay inside the image with area and ratio in range", async () => {
  const gpu = await testGpu();
  const batch = 2000, height = 32, width = 32;
  const o = { batch, channels: 1, height, width, ...MNIST, resizedCrop: { scaleMin: 0.08, scaleMax: 1 } };
  const params = poisonedWords(gpu, batch * AUGMENT_PARAM_WORDS, "params");
  const n = batch * height * width;
  await runPlan(
    gpu,
    (plan) =>
      augmentImages(plan, poisoned(gpu, [n]), uploadPixels(gpu, new Uint8Array(n)), params, {
        ...o,
        seed: 8,
      }),
  );
  const p = await readWords(gpu, params);
  let areaSum = 0;
  for (let b = 0; b < batch; b++) {
    const [top, left, h, w] = p.subarray(b * AUGMENT_PARAM_WORDS, b * AUGMENT_PARAM_WORDS + 4);
    if (!(h >= 1 && w >= 1 && top + h <= height && left + w <= width)) {
      throw new Error(`sample ${b}: crop ${h}×${w} at (${top}, ${left})`);
    }
    // Rounding of the side lengths widens the ranges a little.
    const area = (h * w) / (height * width), ratio = w / h;
    if (area < 0.06 || ratio < 0.6 || ratio > 1.7) {
      throw new Error(`sample ${b}: area ${area}, ratio ${ratio}`);
    }
    areaSum += area;
  }
  // torchvision's rejection of boxes wider or taller than the image biases the area below the uniform scale's
  // 0.54: compare with an independent simulation of its algorithm (another generator, 20,000 draws).
  const u = rng(2024);
  let simulated = 0;
  for (let s = 0; s < 20_000; s++) {
    let area = 1;
    for (let a = 0; a < 10; a++) {
      const target = 1024 * (0.08 + 0.92 * u());
      const aspect = Math.exp(Math.log(3 / 4) + Math.log(16 / 9) * u());
      const w = ref.roundHalfEven(Math.sqrt(target * aspect)),
        h = ref.roundHalfEven(Math.sqrt(target / aspect));
      if (w > 0 && w <= 32 && h > 0 && h <= 32) {
        area = (w * h) / 1024;
        break;
      }
    }
    simulated += area / 20_000;
  }
  // The area's standard deviation is ≈ 0.27: the mean of 2000 is within ±0.006 (sd), ±0.03 is five of them.
  if (Math.abs(areaSum / batch - simulated) > 0.03) {
    throw new Error(`mean area ${areaSum / batch}, simulated ${simulated}`);
  }
});

const mixShapes: [number, number, number, number, number][] = [[5, 3, 7, 5, 10], [4, 1, 28, 28, 10], [
  1,
  3,
  6,
  6,
  3,
]];
const mixSamples: MixSample[] = [
  { mode: "mixup", lambda: 0.3141, box: { y0: 0, y1: 0, x0: 0, x1: 0 } },
  { mode: "cutmix", lambda: NaN, box: { y0: 1, y1: 4, x0: 2, x1: 5 } },
  { mode: "none", lambda: 1, box: { y0: 0, y1: 0, x0: 0, x1: 0 } },
];

for (const [batch, channels, height, width, classes] of mixShapes) {
  for (const template of mixSamples) {
    Deno.test(`mixBatch ${template.mode} matches the reference in place with soft targets summing to 1 (${batch}×${channels}×${height}×${width}, ${classes} classes)`, async () => {
      const gpu = await testGpu();
      const sample = { ...template };
      if (sample.mode === "cutmix") {
        const { y0, y1, x0, x1 } = sample.box;
        sample.lambda = 1 - ((y1 - y0) * (x1 - x0)) / (height * width);
      }
      const o: MixBatchOptions = { batch, channels, height, width, classes, smoothing: 0.1 };
      const n = batch * channels * height * width;
      const x = randn(n, batch + height);
      const labels = Int32Array.from({ length: batch }, (_, b) => (b * 7 + 3) % classes);
      const images = upload(gpu, x, [batch, channels, height, width], "images");
      const targets = poisoned(gpu, [batch, classes], "targets");
      const block = new UniformBlock(gpu, 12, "mix");
      block.u32.fill(0xdeadbeef);
      writeMixParams({ block, word: 4 }, sample);
      await runPlan(
        gpu,
        (plan) =>
          mixBatch(
            plan,
            images,
            targets,
            uploadTensor(gpu, labels, [batch], "labels"),
            { block, word: 4 },
            o,
          ),
      );
      const expected = ref.mixBatch(x, labels, sample, o);
      await expectTensor(gpu, "images", images, expected.images, TOL);
      const t = await readTensor(gpu, targets);
      assertClose("targets", t, expected.targets, { atol: 1e-6, rtol: 1e-6 });
      for (let b = 0; b < batch; b++) {
        const sum = t.subarray(b * classes, (b + 1) * classes).reduce((s, v) => s + v, 0);
        if (Math.abs(sum - 1) > 1e-5) throw new Error(`row ${b} of the targets sums to ${sum}`);
      }
    });
  }
}

Deno.test("sampleMix is deterministic, picks cutmix about half the time and corrects λ to the box area", () => {
  const opts = { height: 32, width: 32 };
  assertEquals(sampleMix(7, 3, opts), sampleMix(7, 3, opts));
  const steps = 4000;
  let cutmix = 0;
  const lambdas: Record<string, number[]> = { mixup: [], cutmix: [] };
  for (let step = 0; step < steps; step++) {
    const s = sampleMix(7, step, opts);
    if (s.mode === "none") throw new Error(`step ${step}: no mixing with prob 1`);
    if (!(s.lambda >= 0 && s.lambda <= 1)) throw new Error(`step ${step}: λ ${s.lambda}`);
    if (s.mode === "cutmix") {
      cutmix++;
      const { y0, y1, x0, x1 } = s.box;
      if (!(0 <= y0 && y0 <= y1 && y1 <= 32 && 0 <= x0 && x0 <= x1 && x1 <= 32)) {
        throw new Error(`step ${step}: box ${JSON.stringify(s.box)}`);
      }
      const area = (y1 - y0) * (x1 - x0);
      if (Math.abs(s.lambda - (1 - area / 1024)) > 1e-12) {
        throw new Error(`step ${step}: λ ${s.lambda} ≠ box`);
      }
    }
    lambdas[s.mode].push(s.lambda);
  }
  // Binomial sd √(0.25/4000) ≈ 0.008.
  if (Math.abs(cutmix / steps - 0.5) > 0.04) throw new Error(`cutmix rate ${cutmix / steps}`);
  // Mixup λ ~ Beta(0.8, 0.8): mean 0.5, variance 1/(4·2.6) ≈ 0.0962.
  const m = lambdas.mixup, mean = m.reduce((a, b) => a + b, 0) / m.length;
  const variance = m.reduce((a, b) => a + (b - mean) ** 2, 0) / m.length;
  if (Math.abs(mean - 0.5) > 0.02 || Math.abs(variance - 0.0962) > 0.008) {
    throw new Error(`mixup λ mean ${mean}, variance ${variance}`);
  }
  // mixup only / cutmix only / neither.
  assertEquals(sampleMix(1, 1, { ...opts, cutmixAlpha: 0 }).mode, "mixup");
  assertEquals(sampleMix(1, 1, { ...opts, mixupAlpha: 0 }).mode, "cutmix");
  assertEquals(sampleMix(1, 1, { ...opts, mixupAlpha: 0, cutmixAlpha: 0 }).mode, "none");
});

Deno.test("one recorded mixBatch plan follows the parameters written for each step", async () => {
  const gpu = await testGpu();
  const o: MixBatchOptions = { batch: 6, channels: 3, height: 8, width: 8, classes: 10, smoothing: 0.1 };
  const n = 6 * 3 * 64;
  const x = randn(n, 4);
  const labels = Int32Array.from([0, 1, 2, 3, 4, 9]);
  const block = new UniformBlock(gpu, MIX_PARAM_WORDS, "mix");
  const images = createTensor(gpu, [n], "images"), source = upload(gpu, x, [n], "source");
  const targets = poisoned(gpu, [6, 10], "targets");
  const plan = new Plan(gpu, "mix steps");
  // The copy restores the batch each run: the mix is in place.
  plan.dispatch("copy", COPY_WGSL, [images, source], Math.ceil(n / 64));
  mixBatch(plan, images, targets, uploadTensor(gpu, labels, [6], "labels"), block, o);
  const modes = new Set<string>();
  for (let step = 0; step < 6; step++) {
    const sample = sampleMix(99, step, { height: 8, width: 8 });
    modes.add(sample.mode);
    writeMixParams(block, sample);
    await plan.run();
    const expected = ref.mixBatch(x, labels, sample, o);
    await expectTensor(gpu, `images at step ${step} (${sample.mode})`, images, expected.images, TOL);
    await expectTensor(gpu, `targets at step ${step}`, targets, expected.targets, { atol: 1e-6, rtol: 1e-6 });
  }
  plan.destroy();
  if (modes.size !== 2) throw new Error(`six steps used only ${[...modes]}`);
});

const COPY_WGSL = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < arrayLength(&dst)) { dst[gid.x] = src[gid.x]; }
}`;

Deno.test("augmentImages and mixBatch reject wrong shapes and options, naming the tensor", async () => {
  const gpu = await testGpu();
  const plan = new Plan(gpu, "shapes");
  const o = { batch: 2, channels: 3, height: 4, width: 4, ...CIFAR };
  const pixels = createTensor(gpu, [24], "pixels");
  assertThrows(
    () => augmentImages(plan, createTensor(gpu, [95], "short"), pixels, null, o),
    TypeError,
    "short",
  );
  assertThrows(
    () => augmentImages(plan, createTensor(gpu, [96], "out"), createTensor(gpu, [23], "px"), null, o),
    TypeError,
    "px",
  );
  assertThrows(
    () => augmentImages(plan, createTensor(gpu, [96], "out"), pixels, null, { ...o, flip: true, seed: 1 }),
    TypeError,
    "params",
  );
  assertThrows(
    () =>
      augmentImages(plan, createTensor(gpu, [96], "out"), pixels, null, { ...o, pad: 2, resizedCrop: true }),
    TypeError,
    "either",
  );
  assertThrows(
    () => augmentImages(plan, createTensor(gpu, [96], "out"), pixels, null, { ...o, mean: [0.5] }),
    TypeError,
    "mean",
  );
  assertThrows(
    () => augmentImages(plan, createTensor(gpu, [96], "out"), pixels, null, { ...o, reprob: 2, seed: 1 }),
    RangeError,
    "reprob",
  );
  const block = new UniformBlock(gpu, 4, "small");
  const mo = { batch: 2, channels: 3, height: 4, width: 4, classes: 5 };
  assertThrows(
    () =>
      mixBatch(
        plan,
        createTensor(gpu, [96], "img"),
        createTensor(gpu, [9], "tgt"),
        createTensor(gpu, [2], "lab"),
        block,
        mo,
      ),
    TypeError,
    "tgt",
  );
  assertThrows(
    () =>
      mixBatch(
        plan,
        createTensor(gpu, [96], "img"),
        createTensor(gpu, [10], "tgt"),
        createTensor(gpu, [2], "lab"),
        block,
        mo,
      ),
    RangeError,
    "do not fit",
  );
  const ra = {
    scratch: [createTensor(gpu, [96], "s0"), createTensor(gpu, [95], "s1")] as const,
    lut: createTensor(gpu, [1536], "lut"),
  };
  const params = createTensor(gpu, [2 * AUGMENT_PARAM_WORDS], "params");
  assertThrows(
    () =>
      augmentImages(plan, createTensor(gpu, [96], "out"), pixels, params, { ...o, seed: 1, randAugment: ra }),
    TypeError,
    "s1",
  );
  assertThrows(
    () =>
      augmentImages(plan, createTensor(gpu, [96], "out"), pixels, params, {
        ...o,
        seed: 1,
        randAugment: { ...ra, ops: ["Rotate", "Blur" as RandAugmentOp] },
      }),
    RangeError,
    "Blur",
  );
  assertThrows(
    () =>
      augmentImages(plan, createTensor(gpu, [96], "out"), pixels, null, {
        ...o,
        seed: 1,
        randAugment: ra,
        variant: "naive",
      }),
    TypeError,
    "default",
  );
  await Promise.resolve();
});
