import assert from "node:assert/strict";
import {
  CIFAR100_MEAN,
  CIFAR100_STD,
  CIFAR10_CLASSES,
  CIFAR10_MEAN,
  CIFAR10_STD,
  encodeCifarRecords,
  loadCifar10,
  loadCifar100,
  parseCifarRecords,
} from "../../lib/data/cifar.ts";
import { memoryFiles } from "../../lib/data/dataset.ts";
import { rng } from "../support/check.ts";

/** `count` seeded 3×32×32 images and label columns (each below its class count). */
function records(count: number, seed: number, classCounts: number[]) {
  const u = rng(seed);
  const images = Uint8Array.from({ length: count * 3072 }, () => Math.floor(u() * 256));
  const labels = classCounts.map((k) => Int32Array.from({ length: count }, () => Math.floor(u() * k)));
  return { images, labels, bytes: encodeCifarRecords(images, labels, count) };
}

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("parseCifarRecords splits records into CHW images and labels", () => {
  // One record by hand: label 7, then R plane 1s, G plane 2s, B plane 3s.
  const bytes = new Uint8Array(3073);
  bytes[0] = 7;
  bytes.fill(1, 1, 1025).fill(2, 1025, 2049).fill(3, 2049);
  const split = parseCifarRecords(bytes, { labelBytes: 1, labelIndex: 0, classCount: 10 }, "one.bin");
  assert.deepEqual([split.length, [...split.labels]], [1, [7]]);
  assert.deepEqual([split.images[0], split.images[1024], split.images[2048], split.images[3071]], [
    1,
    2,
    3,
    3,
  ]);
});

Deno.test("loadCifar10 joins the five training batches in order and reads batches.meta.txt", async () => {
  const batches = [1, 2, 3, 4, 5].map((k) => records(k, k, [10]));
  const test = records(3, 9, [10]);
  const names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
  const tree: Record<string, Uint8Array> = {
    "c/cifar-10-batches-bin/test_batch.bin": test.bytes,
    "c/cifar-10-batches-bin/batches.meta.txt": text(names.join("\n") + "\n\n"),
  };
  batches.forEach((b, i) => (tree[`c/cifar-10-batches-bin/data_batch_${i + 1}.bin`] = b.bytes));
  // Given the archive's parent directory, the loader finds its cifar-10-batches-bin/ subdirectory.
  const data = await loadCifar10("c", { files: memoryFiles(tree) });
  assert.deepEqual([data.name, data.channels, data.height, data.width], ["cifar10", 3, 32, 32]);
  assert.deepEqual([data.mean, data.std], [CIFAR10_MEAN, CIFAR10_STD]);
  assert.deepEqual(data.classes, names);
  assert.equal(data.train.length, 15);
  assert.deepEqual([...data.train.labels], batches.flatMap((b) => [...b.labels[0]]));
  assert.deepEqual(data.train.images.subarray(3072 * 1, 3072 * 3), batches[1].images);
  assert.deepEqual(data.train.images.subarray(3072 * 10), batches[4].images);
  assert.deepEqual([...data.test.labels], [...test.labels[0]]);
  assert.deepEqual(data.test.images, test.images);

  // Without the names file, the standard names are used.
  delete tree["c/cifar-10-batches-bin/batches.meta.txt"];
  assert.deepEqual(
    (await loadCifar10("c/cifar-10-batches-bin", { files: memoryFiles(tree) })).classes,
    CIFAR10_CLASSES,
  );
});

Deno.test("loadCifar100 picks the fine or the coarse label byte and their names", async () => {
  const train = records(4, 1, [20, 100]), test = records(2, 2, [20, 100]);
  const fine = Array.from({ length: 100 }, (_, i) => `fine${i}`);
  const coarse = Array.from({ length: 20 }, (_, i) => `coarse${i}`);
  const files = memoryFiles({
    "d/train.bin": train.bytes,
    "d/test.bin": test.bytes,
    "d/fine_label_names.txt": text(fine.join("\n")),
    "d/coarse_label_names.txt": text(coarse.join("\r\n")),
  });
  const fineSet = await loadCifar100("d", { files });
  assert.deepEqual([fineSet.name, fineSet.classes, fineSet.mean, fineSet.std], [
    "cifar100",
    fine,
    CIFAR100_MEAN,
    CIFAR100_STD,
  ]);
  assert.deepEqual([...fineSet.train.labels], [...train.labels[1]]);
  assert.deepEqual([...fineSet.test.labels], [...test.labels[1]]);
  assert.deepEqual(fineSet.train.images, train.images);
  const coarseSet = await loadCifar100("d", { files, labels: "coarse" });
  assert.deepEqual([coarseSet.name, coarseSet.classes], ["cifar100-coarse", coarse]);
  assert.deepEqual([...coarseSet.train.labels], [...train.labels[0]]);
});

Deno.test("CIFAR loaders name the file on a truncated batch, a bad label, bad names and a missing directory", async () => {
  const good = records(2, 1, [10]).bytes;
  assert.throws(
    () =>
      parseCifarRecords(
        good.subarray(0, 5000),
        { labelBytes: 1, labelIndex: 0, classCount: 10 },
        "x/data_batch_2.bin",
      ),
    {
      name: "SyntaxError",
      message: "x/data_batch_2.bin: 5000 bytes is not a whole number of 3073-byte CIFAR records " +
        "(1 label byte + 3072 image bytes)",
    },
  );
  assert.throws(
    () => parseCifarRecords(new Uint8Array(), { labelBytes: 2, labelIndex: 1, classCount: 100 }, "empty.bin"),
    {
      name: "SyntaxError",
      message: /^empty\.bin: 0 bytes .* 3074-byte CIFAR records \(2 label bytes/,
    },
  );
  const bad = good.slice();
  bad[3073] = 12;
  assert.throws(() => parseCifarRecords(bad, { labelBytes: 1, labelIndex: 0, classCount: 10 }, "b.bin"), {
    name: "SyntaxError",
    message: "b.bin: record 1 has label 12, not below 10 classes (is this the right CIFAR file?)",
  });
  // CIFAR-100: the unused label byte is checked too (a coarse label of 200 means a misaligned or foreign file).
  const hundred = new Uint8Array(2 * 3074);
  hundred[3074] = 200;
  const fine = { labelBytes: 2, labelIndex: 1, classCount: 100, labelLimits: [20, 100] };
  assert.throws(() => parseCifarRecords(hundred, fine, "train.bin"), {
    name: "SyntaxError",
    message: "train.bin: record 1 has 200 in label byte 0, not below 20 (is this the right CIFAR file?)",
  });

  const tree: Record<string, Uint8Array> = { "c/test_batch.bin": good, "c/batches.meta.txt": text("a\nb\n") };
  for (let k = 1; k <= 5; k++) tree[`c/data_batch_${k}.bin`] = good;
  await assert.rejects(() => loadCifar10("c", { files: memoryFiles(tree) }), {
    name: "SyntaxError",
    message: "c/batches.meta.txt: expected 10 class names, found 2",
  });
  delete tree["c/batches.meta.txt"];
  delete tree["c/data_batch_4.bin"];
  await assert.rejects(
    () => loadCifar10("c", { files: memoryFiles(tree) }),
    (e) => e instanceof Deno.errors.NotFound && e.message.includes("c/data_batch_4.bin"),
  );
  await assert.rejects(
    () => loadCifar100("c", { files: memoryFiles(tree) }),
    (e) => e instanceof Deno.errors.NotFound && e.message === "c: no test.bin here or in cifar-100-binary/",
  );
});
