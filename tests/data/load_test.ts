import assert from "node:assert/strict";
import { encodeCifarRecords } from "../../lib/data/cifar.ts";
import { batches, memoryFiles } from "../../lib/data/dataset.ts";
import { encodeIdx } from "../../lib/data/idx.ts";
import { loadDataset, prefetchBatches } from "../../lib/data/load.ts";
import { createSynthetic } from "../../lib/data/synthetic.ts";
import { encode as encodePng } from "npm:fast-png@8.0.0";

Deno.test("loadDataset opens each kind from its spec string", async () => {
  const gray = await loadDataset("synthetic:gray28", { seed: 3 });
  assert.deepEqual([gray.name, gray.channels, gray.height, gray.train.length, gray.test.length], [
    "synthetic-shapes",
    1,
    28,
    12000,
    2000,
  ]);
  const idx = {
    "m/train-images-idx3-ubyte": encodeIdx(new Uint8Array(2 * 4), [2, 2, 2]),
    "m/train-labels-idx1-ubyte": encodeIdx(Uint8Array.from([1, 2]), [2]),
    "m/t10k-images-idx3-ubyte": encodeIdx(new Uint8Array(4), [1, 2, 2]),
    "m/t10k-labels-idx1-ubyte": encodeIdx(Uint8Array.from([3]), [1]),
  };
  const cifar100 = encodeCifarRecords(new Uint8Array(3072), [Int32Array.of(4), Int32Array.of(55)], 1);
  const files = memoryFiles({
    ...idx,
    "c100/train.bin": cifar100,
    "c100/test.bin": cifar100,
    "f/a/1.png": encodePng({ width: 2, height: 2, channels: 3, data: new Uint8Array(12) }),
    "f/b/1.png": encodePng({ width: 2, height: 2, channels: 3, data: new Uint8Array(12) }),
  });
  assert.equal((await loadDataset("mnist:m", { files })).name, "mnist");
  assert.equal((await loadDataset("fashion-mnist:m", { files })).classes[1], "Trouser");
  assert.deepEqual([...(await loadDataset("cifar100:c100", { files })).train.labels], [55]);
  assert.deepEqual([...(await loadDataset("cifar100-coarse:c100", { files })).train.labels], [4]);
  const folder = await loadDataset("folder:f", { files, size: 5, channels: 1 });
  assert.deepEqual([folder.channels, folder.height, folder.width, folder.classes], [1, 5, 5, ["a", "b"]]);
});

Deno.test("loadDataset rejects unknown kinds and missing directories with a TypeError naming the spec", async () => {
  await assert.rejects(() => loadDataset("imagenet"), {
    name: "TypeError",
    message: /^dataset "imagenet": unknown kind/,
  });
  await assert.rejects(() => loadDataset("cifar10"), {
    name: "TypeError",
    message: /^dataset "cifar10": cifar10 needs a directory/,
  });
  await assert.rejects(() => loadDataset("synthetic:blue"), {
    name: "TypeError",
    message: /synthetic\[:gray\|rgb\]\[size\]/,
  });
});

Deno.test("prefetchBatches yields exactly what batches yields", async () => {
  const data = createSynthetic({ trainSize: 37, testSize: 0, seed: 2 });
  const options = { shuffle: true, seed: 5, epoch: 1, dropLast: true };
  const got = [];
  for await (const b of prefetchBatches(data.train, 8, options, 2)) got.push(b);
  assert.deepEqual(got, [...batches(data.train, 8, options)]);
  assert.equal(got.length, 4);
});
