import assert from "node:assert/strict";
import { classCounts, type Split, validateSplit } from "../../lib/data/dataset.ts";
import { createSynthetic, renderSyntheticImage, SYNTHETIC_CLASSES } from "../../lib/data/synthetic.ts";

/** FNV-1a over bytes: a cheap fingerprint to pin generated data. */
function fingerprint(bytes: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return (h >>> 0).toString(16).padStart(8, "0");
}

/** Gray pixels in [0, 1] minus a constant, one row per image. */
function grayFeatures(split: Split, channels: number, plane: number): Float64Array {
  const x = new Float64Array(split.length * plane);
  for (let i = 0; i < split.length; i++) {
    for (let p = 0; p < plane; p++) {
      let v = 0;
      for (let c = 0; c < channels; c++) v += split.images[(i * channels + c) * plane + p];
      x[i * plane + p] = v / (255 * channels) - 0.3;
    }
  }
  return x;
}

Deno.test("createSynthetic has the declared geometry, ten balanced classes and consistent splits", () => {
  const data = createSynthetic({ trainSize: 1003, testSize: 200, seed: 1 });
  assert.deepEqual([data.name, data.channels, data.height, data.width], ["synthetic-shapes", 3, 32, 32]);
  assert.deepEqual(data.classes, SYNTHETIC_CLASSES);
  assert.equal(data.classes.length, 10);
  validateSplit("train", data.train, 3 * 32 * 32, 10);
  validateSplit("test", data.test, 3 * 32 * 32, 10);
  assert.deepEqual(classCounts(data.train, 10), [101, 101, 101, 100, 100, 100, 100, 100, 100, 100]);
  assert.deepEqual(classCounts(data.test, 10), new Array(10).fill(20));
  // Measured statistics are plausible normalisation constants.
  for (let c = 0; c < 3; c++) {
    assert.ok(data.mean[c] > 0.1 && data.mean[c] < 0.5, `mean ${data.mean}`);
    assert.ok(data.std[c] > 0.08 && data.std[c] < 0.4, `std ${data.std}`);
  }
});

Deno.test("createSynthetic is deterministic by seed and its splits do not share images", () => {
  const a = createSynthetic({ trainSize: 300, testSize: 100, seed: 7 });
  const b = createSynthetic({ trainSize: 300, testSize: 100, seed: 7 });
  const c = createSynthetic({ trainSize: 300, testSize: 100, seed: 8 });
  assert.deepEqual(a.train.images, b.train.images);
  assert.deepEqual(a.test.images, b.test.images);
  assert.notDeepEqual(a.train.images, c.train.images);
  // A smaller set is a prefix of a larger one with the same seed: image i depends only on (seed, split, i).
  const small = createSynthetic({ trainSize: 50, testSize: 10, seed: 7 });
  assert.deepEqual(small.train.images, a.train.images.subarray(0, 50 * 3072));
  const trainPrints = new Set(
    Array.from({ length: 300 }, (_, i) => fingerprint(a.train.images.subarray(i * 3072, (i + 1) * 3072))),
  );
  assert.equal(trainPrints.size, 300, "every training image is different");
  for (let i = 0; i < 100; i++) {
    assert.ok(
      !trainPrints.has(fingerprint(a.test.images.subarray(i * 3072, (i + 1) * 3072))),
      `test image ${i} in train`,
    );
  }
  // Pinned bytes: a change here silently changes every default training run (V8's Math functions are fdlibm ports,
  // the same on every platform).
  assert.equal(fingerprint(small.train.images), "be0858b4");
  const gray = createSynthetic({ trainSize: 20, testSize: 0, seed: 7, channels: 1, size: 28 });
  assert.equal(fingerprint(gray.train.images), "8c63f2cb");
});

Deno.test("renderSyntheticImage draws the shape brighter than the background in gray and colour", () => {
  for (const channels of [1, 3]) {
    for (let label = 0; label < 10; label++) {
      const image = new Uint8Array(channels * 28 * 28);
      renderSyntheticImage(image, label, 1234 + label, 28, channels);
      const plane = image.subarray(0, 28 * 28);
      const sorted = [...plane].sort((x, y) => x - y);
      // The brightest tenth (shape and clutter) stands well above the median (background).
      const contrast = sorted[Math.floor(0.95 * sorted.length)] - sorted[Math.floor(0.5 * sorted.length)];
      assert.ok(contrast > 40, `class ${SYNTHETIC_CLASSES[label]} (${channels} ch): contrast ${contrast}`);
    }
  }
  assert.throws(() => renderSyntheticImage(new Uint8Array(3072), 10, 1), {
    name: "RangeError",
    message: /label 10/,
  });
  assert.throws(() => createSynthetic({ channels: 2 }), { name: "RangeError" });
  assert.throws(() => createSynthetic({ size: 8 }), { name: "RangeError" });
});

Deno.test("linear classifiers on pixels stay far below 90% on the synthetic set while classes are balanced", () => {
  const data = createSynthetic({ trainSize: 3000, testSize: 1000, seed: 11 });
  assert.deepEqual(classCounts(data.test, 10), new Array(10).fill(100));
  const P = 32 * 32, K = 10;
  const x = grayFeatures(data.train, 3, P), xt = grayFeatures(data.test, 3, P);
  const accuracy = (score: (row: Float64Array, k: number) => number) => {
    let correct = 0;
    for (let i = 0; i < data.test.length; i++) {
      const row = xt.subarray(i * P, (i + 1) * P);
      let best = 0, bestScore = -Infinity;
      for (let k = 0; k < K; k++) {
        const s = score(row, k);
        if (s > bestScore) [best, bestScore] = [k, s];
      }
      if (best === data.test.labels[i]) correct++;
    }
    return correct / data.test.length;
  };

  // Nearest class mean.
  const means = new Float64Array(K * P);
  for (let i = 0; i < data.train.length; i++) {
    for (let p = 0; p < P; p++) means[data.train.labels[i] * P + p] += x[i * P + p] / 300;
  }
  const ncm = accuracy((row, k) => {
    let d = 0;
    for (let p = 0; p < P; p++) d -= (row[p] - means[k * P + p]) ** 2;
    return d;
  });

  // Multinomial logistic regression, 8 epochs of SGD with a decaying step.
  const w = new Float64Array(K * (P + 1)), z = new Float64Array(K);
  const logit = (row: Float64Array, k: number) => {
    let v = w[k * (P + 1) + P];
    for (let p = 0; p < P; p++) v += w[k * (P + 1) + p] * row[p];
    return v;
  };
  let trainCorrect = 0;
  for (let epoch = 0; epoch < 8; epoch++) {
    const lr = 0.05 / (1 + 0.3 * epoch);
    trainCorrect = 0;
    for (let i = 0; i < data.train.length; i++) {
      const row = x.subarray(i * P, (i + 1) * P), y = data.train.labels[i];
      let max = -Infinity, best = 0;
      for (let k = 0; k < K; k++) {
        z[k] = logit(row, k);
        if (z[k] > max) [max, best] = [z[k], k];
      }
      if (best === y) trainCorrect++;
      let sum = 0;
      for (let k = 0; k < K; k++) sum += z[k] = Math.exp(z[k] - max);
      for (let k = 0; k < K; k++) {
        const g = z[k] / sum - (k === y ? 1 : 0), base = k * (P + 1);
        for (let p = 0; p < P; p++) w[base + p] -= lr * g * row[p];
        w[base + P] -= lr * g;
      }
    }
  }
  const logistic = accuracy(logit);
  // Chance is 10%; the classes differ only in shape, position and size vary, so both stay well below 90%.
  assert.ok(ncm > 0.1 && ncm < 0.5, `nearest class mean accuracy ${ncm}`);
  assert.ok(logistic > 0.15 && logistic < 0.6, `logistic regression accuracy ${logistic}`);
  assert.ok(
    trainCorrect / data.train.length < 0.75,
    `logistic regression training accuracy ${trainCorrect / 3000}`,
  );
});
