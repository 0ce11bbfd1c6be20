import {
  batchCount,
  batches,
  channelStats,
  classCounts,
  memoryFiles,
  normalizeImages,
  prefetch,
  shuffledOrder,
  type Split,
  validateSplit,
} from "../../lib/data/dataset.ts";
import assert from "node:assert/strict";
import { assertClose } from "../support/check.ts";

/** A split whose image i is `imageSize` bytes all equal to i % 256, labelled i % classes. */
function indexedSplit(length: number, imageSize: number, classes = 3): Split {
  const images = new Uint8Array(length * imageSize);
  for (let i = 0; i < length; i++) images.fill(i % 256, i * imageSize, (i + 1) * imageSize);
  return { length, images, labels: Int32Array.from({ length }, (_, i) => i % classes) };
}

Deno.test("shuffledOrder is a permutation that depends only on (n, seed, epoch)", () => {
  for (const n of [0, 1, 2, 17, 1000]) {
    const order = shuffledOrder(n, 42, 3);
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i),
      `permutation n=${n}`,
    );
    assert.deepEqual([...order], [...shuffledOrder(n, 42, 3)], `repeatable n=${n}`);
  }
  const a = [...shuffledOrder(1000, 42, 3)];
  assert(a.join() !== [...shuffledOrder(1000, 42, 4)].join(), "another epoch must give another order");
  assert(a.join() !== [...shuffledOrder(1000, 43, 3)].join(), "another seed must give another order");
  // Pinned values: the order must not change between versions, or saved runs stop being reproducible.
  assert.deepEqual([...shuffledOrder(8, 0, 0)], [7, 3, 6, 1, 5, 2, 4, 0], "pinned order");
  assert.deepEqual([...shuffledOrder(8, 1, 2)], [5, 6, 0, 4, 1, 7, 3, 2], "pinned order");
});

Deno.test("shuffledOrder spreads every element evenly over the positions", () => {
  // Over 2,000 epochs of n = 5, each element lands in each position about 400 times.
  const n = 5, epochs = 2000;
  const hits = new Array(n * n).fill(0);
  for (let e = 0; e < epochs; e++) shuffledOrder(n, 7, e).forEach((v, pos) => hits[v * n + pos]++);
  for (const h of hits) assert(Math.abs(h - epochs / n) < 70, `position counts ${hits} are not uniform`);
});

Deno.test("batches visit every image exactly once per epoch, with labels and pixels kept together", () => {
  const split = indexedSplit(23, 6);
  for (const shuffle of [false, true]) {
    const seen: number[] = [];
    for (const batch of batches(split, 5, { shuffle, seed: 9, epoch: 2 })) {
      assert.deepEqual(batch.images.length, batch.count * 6, "batch bytes");
      for (let k = 0; k < batch.count; k++) {
        const i = batch.indices[k];
        seen.push(i);
        assert.deepEqual(batch.labels[k], i % 3, `label of image ${i}`);
        assert(batch.images.subarray(k * 6, (k + 1) * 6).every((v) => v === i), `pixels of image ${i}`);
      }
    }
    assert.deepEqual(seen.slice().sort((a, b) => a - b), Array.from({ length: 23 }, (_, i) => i), `coverage`);
    if (!shuffle) assert.deepEqual(seen, Array.from({ length: 23 }, (_, i) => i), "unshuffled order");
  }
});

Deno.test("batches cut a short last batch, or drop it with dropLast", () => {
  const split = indexedSplit(23, 2);
  assert.deepEqual([...batches(split, 5)].map((b) => b.count), [5, 5, 5, 5, 3], "counts");
  assert.deepEqual(
    [...batches(split, 5, { dropLast: true })].map((b) => b.count),
    [5, 5, 5, 5],
    "counts (dropLast)",
  );
  assert.deepEqual([...batches(split, 23, { dropLast: true })].map((b) => b.count), [23], "one exact batch");
  assert.deepEqual([...batches(split, 64, { dropLast: true })].length, 0, "batch larger than the split");
  assert.deepEqual(batchCount(23, 5), 5, "batchCount");
  assert.deepEqual(batchCount(23, 5, true), 4, "batchCount (dropLast)");
  assert.deepEqual([...batches(indexedSplit(0, 4), 3)].length, 0, "empty split");
});

Deno.test("the shuffled batch order is the same on every run and differs between epochs", () => {
  const split = indexedSplit(50, 1);
  const order = (epoch: number) =>
    [...batches(split, 8, { shuffle: true, seed: 1, epoch })].flatMap((b) => [...b.indices]);
  assert.deepEqual(order(0), order(0), "same epoch");
  assert.deepEqual(order(0), [...shuffledOrder(50, 1, 0)], "batches follow shuffledOrder");
  assert(order(0).join() !== order(1).join(), "epochs 0 and 1 must differ");
});

Deno.test("batches rejects a bad batch size and an inconsistent split", () => {
  const split = indexedSplit(4, 2);
  for (const size of [0, -1, 2.5, NaN]) {
    assert.throws(() => batches(split, size).next(), { name: "RangeError", message: /batchSize/ });
  }
  assert.throws(
    () => batches({ length: 3, images: new Uint8Array(7), labels: new Int32Array(3) }, 2).next(),
    { name: "TypeError", message: /3 images has 7 image bytes/ },
  );
});

Deno.test("prefetch yields the same batches and gathers the next one before the consumer asks", async () => {
  const split = indexedSplit(10, 3);
  const produced: number[] = [];
  function* counted() {
    for (const b of batches(split, 3, { shuffle: true, seed: 4 })) {
      produced.push(b.indices[0]);
      yield b;
    }
  }
  const got: number[] = [];
  for await (const batch of prefetch(counted())) {
    got.push(batch.indices[0]);
    // While the consumer "trains", the producer runs one batch ahead.
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(produced.length, Math.min(got.length + 1, 4), `produced after consuming ${got.length}`);
  }
  assert.deepEqual(got, [...batches(split, 3, { shuffle: true, seed: 4 })].map((b) => b.indices[0]), "order");
});

Deno.test("prefetch accepts async sources, runs deeper, and closes the source on early exit", async () => {
  let closed = false;
  async function* source() {
    try {
      for (let i = 0; i < 100; i++) yield i;
    } finally {
      closed = true;
    }
  }
  const got: number[] = [];
  for await (const v of prefetch(source(), 3)) {
    got.push(v);
    if (v === 4) break;
  }
  assert.deepEqual(got, [0, 1, 2, 3, 4], "values");
  assert(closed, "the source must be closed when the consumer stops early");
  await assert.rejects(async () => {
    for await (const _ of prefetch([1], 0)) { /* never */ }
  }, { name: "RangeError", message: /depth/ });
});

Deno.test("prefetch passes a producer's error to the consumer", async () => {
  function* failing() {
    yield 1;
    throw new SyntaxError("broken file");
  }
  const got: number[] = [];
  await assert.rejects(async () => {
    for await (const v of prefetch(failing())) got.push(v);
  }, { name: "SyntaxError", message: "broken file" });
  assert.deepEqual(got, [1], "values before the error");
});

Deno.test("channelStats and normalizeImages agree with a float64 computation", () => {
  // Two images of 2 channels × 3 pixels.
  const images = Uint8Array.from([0, 10, 20, 255, 128, 1, 30, 40, 50, 7, 8, 9]);
  const split = { length: 2, images, labels: new Int32Array(2) };
  const { mean, std } = channelStats(split, 2);
  const ch = [[0, 10, 20, 30, 40, 50], [255, 128, 1, 7, 8, 9]].map((v) => v.map((x) => x / 255));
  const m = ch.map((v) => v.reduce((a, b) => a + b) / v.length);
  const s = ch.map((v, c) => Math.sqrt(v.reduce((a, b) => a + (b - m[c]) ** 2, 0) / v.length));
  assertClose("mean", mean, m, { atol: 1e-12, rtol: 1e-12 });
  assertClose("std", std, s, { atol: 1e-12, rtol: 1e-12 });
  const out = normalizeImages(images, {
    channels: 2,
    height: 1,
    width: 3,
    mean: [0.5, 0.25],
    std: [0.2, 0.4],
  });
  const expected = [...images].map((v, i) => {
    const c = Math.floor(i / 3) % 2;
    return (v / 255 - [0.5, 0.25][c]) / [0.2, 0.4][c];
  });
  assertClose("normalised", out, expected, { atol: 1e-6, rtol: 1e-6 });
});

Deno.test("validateSplit and classCounts report what is in a split", () => {
  const split = indexedSplit(10, 4, 3);
  validateSplit("train", split, 4, 3);
  assert.deepEqual(classCounts(split, 3), [4, 3, 3], "counts");
  assert.throws(() => validateSplit("train", split, 4, 2), {
    name: "RangeError",
    message: "train: label 2 at index 2 is outside [0, 2)",
  });
  assert.throws(() => validateSplit("test", split, 5, 3), {
    name: "TypeError",
    message: /^test: expected 10 images/,
  });
});

Deno.test("memoryFiles lists directories and reports missing files as NotFound", async () => {
  const files = memoryFiles({
    "root/a/1.png": new Uint8Array([1]),
    "root/a/2.png": new Uint8Array([2]),
    "root/b.txt": new Uint8Array(),
  });
  const entries = (await files.readDir("root")).sort((x, y) => x.name < y.name ? -1 : 1);
  assert.deepEqual(entries, [{ name: "a", isFile: false, isDirectory: true }, {
    name: "b.txt",
    isFile: true,
    isDirectory: false,
  }], "root");
  assert.deepEqual([...await files.readFile("root/a/2.png")], [2], "file");
  assert(await files.exists("root/a") && !(await files.exists("root/c")), "exists");
  await assert.rejects(
    () => files.readFile("root/zz.png"),
    (e) => e instanceof Deno.errors.NotFound && /root\/zz\.png/.test(e.message),
  );
});
