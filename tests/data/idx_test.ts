import assert from "node:assert/strict";
import { channelStats, classCounts, memoryFiles } from "../../lib/data/dataset.ts";
import {
  encodeIdx,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DIR,
  gunzip,
  loadFashionMnist,
  loadMnist,
  parseIdxImages,
  parseIdxLabels,
} from "../../lib/data/idx.ts";
import { assertClose, rng } from "../support/check.ts";

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A tiny MNIST-style set: `count` images of h×w seeded bytes and labels below 10. */
function tinySet(count: number, h: number, w: number, seed: number) {
  const u = rng(seed);
  const images = Uint8Array.from({ length: count * h * w }, () => Math.floor(u() * 256));
  const labels = Uint8Array.from({ length: count }, () => Math.floor(u() * 10));
  return { images, labels };
}

/** The four files of an MNIST-style directory, gzip or raw. */
async function idxDirectory(dir: string, compressed: boolean, h = 28, w = 28) {
  const train = tinySet(7, h, w, 1), test = tinySet(3, h, w, 2);
  const files: Record<string, Uint8Array> = {
    "train-images-idx3-ubyte": encodeIdx(train.images, [7, h, w]),
    "train-labels-idx1-ubyte": encodeIdx(train.labels, [7]),
    "t10k-images-idx3-ubyte": encodeIdx(test.images, [3, h, w]),
    "t10k-labels-idx1-ubyte": encodeIdx(test.labels, [3]),
  };
  const tree: Record<string, Uint8Array> = {};
  for (const [name, bytes] of Object.entries(files)) {
    tree[`${dir}/${name}${compressed ? ".gz" : ""}`] = compressed ? await gzip(bytes) : bytes;
  }
  return { tree, train, test };
}

for (const compressed of [false, true]) {
  Deno.test(`loadFashionMnist reads a ${compressed ? "gzip" : "raw"} IDX directory crafted in the test`, async () => {
    const { tree, train, test } = await idxDirectory("fm", compressed);
    const data = await loadFashionMnist("fm", { files: memoryFiles(tree) });
    assert.equal(data.name, "fashion-mnist");
    assert.deepEqual([data.channels, data.height, data.width], [1, 28, 28]);
    assert.deepEqual(data.classes, FASHION_MNIST_CLASSES);
    assert.deepEqual([data.mean, data.std], [[0.2860], [0.3530]]);
    assert.equal(data.train.length, 7);
    assert.deepEqual([...data.train.images], [...train.images]);
    assert.deepEqual([...data.train.labels], [...train.labels]);
    assert.equal(data.test.length, 3);
    assert.deepEqual([...data.test.images], [...test.images]);
    assert.deepEqual([...data.test.labels], [...test.labels]);
  });
}

Deno.test("loadMnist keeps odd image sizes and MNIST's statistics", async () => {
  const { tree, train } = await idxDirectory("digits", false, 5, 3);
  const data = await loadMnist("digits", { files: memoryFiles(tree) });
  assert.deepEqual([data.name, data.height, data.width, data.mean, data.std], ["mnist", 5, 3, [0.1307], [
    0.3081,
  ]]);
  assert.deepEqual([...data.train.images], [...train.images]);
});

Deno.test("parseIdxImages rejects a wrong magic, a short header and a wrong length, naming the file", () => {
  const good = encodeIdx(new Uint8Array(2 * 4 * 3), [2, 4, 3]);
  assert.deepEqual(
    (({ count, height, width }) => [count, height, width])(parseIdxImages(good, "ok")),
    [2, 4, 3],
  );
  const labels = encodeIdx(new Uint8Array(2), [2]);
  assert.throws(() => parseIdxImages(labels, "data/train-images-idx3-ubyte"), {
    name: "SyntaxError",
    message:
      "data/train-images-idx3-ubyte: expected IDX images magic 0x00000803 (unsigned bytes, 3 dimensions), " +
      "found 0x00000801",
  });
  assert.throws(() => parseIdxImages(good.subarray(0, 10), "short.idx"), {
    name: "SyntaxError",
    message: "short.idx: 10 bytes is too short for an IDX images header (16 bytes)",
  });
  assert.throws(() => parseIdxImages(good.subarray(0, good.length - 1), "cut.idx"), {
    name: "SyntaxError",
    message: "cut.idx: header says 2×4×3 = 24 bytes of images, the file holds 23",
  });
  assert.throws(() => parseIdxImages(new Uint8Array([...good, 0]), "long.idx"), {
    name: "SyntaxError",
    message: /^long\.idx: header says .* holds 25$/,
  });
});

Deno.test("parseIdxLabels rejects an image file and labels beyond the class count, naming the file", () => {
  assert.throws(() => parseIdxLabels(encodeIdx(new Uint8Array(4), [1, 2, 2]), "labels.idx"), {
    name: "SyntaxError",
    message:
      /^labels\.idx: expected IDX labels magic 0x00000801 \(unsigned bytes, 1 dimension\), found 0x00000803/,
  });
  assert.throws(() => parseIdxLabels(encodeIdx(Uint8Array.from([3, 10, 1]), [3]), "labels.idx", 10), {
    name: "SyntaxError",
    message: "labels.idx: label 10 at index 1 is not below 10 classes",
  });
});

Deno.test("loading fails clearly on missing files, mismatched counts and damaged gzip", async () => {
  const { tree } = await idxDirectory("fm", false);
  const missing = { ...tree };
  delete missing["fm/t10k-labels-idx1-ubyte"];
  await assert.rejects(
    () => loadFashionMnist("fm", { files: memoryFiles(missing) }),
    (e) =>
      e instanceof Deno.errors.NotFound &&
      e.message ===
        "fm: none of t10k-labels-idx1-ubyte, t10k-labels-idx1-ubyte.gz, t10k-labels.idx1-ubyte, " +
          "t10k-labels.idx1-ubyte.gz found",
  );

  const mismatched = { ...tree, "fm/train-labels-idx1-ubyte": encodeIdx(new Uint8Array(6), [6]) };
  await assert.rejects(() => loadFashionMnist("fm", { files: memoryFiles(mismatched) }), {
    name: "SyntaxError",
    message: "fm/train-labels-idx1-ubyte: holds 6 labels but fm/train-images-idx3-ubyte holds 7 images",
  });

  const none = {
    ...tree,
    "fm/t10k-images-idx3-ubyte": encodeIdx(new Uint8Array(), [0, 2, 2]),
    "fm/t10k-labels-idx1-ubyte": encodeIdx(new Uint8Array(), [0]),
  };
  await assert.rejects(() => loadFashionMnist("fm", { files: memoryFiles(none) }), {
    name: "SyntaxError",
    message: "fm/t10k-images-idx3-ubyte: holds no images",
  });

  const gz = await gzip(tree["fm/train-images-idx3-ubyte"]);
  const damaged = { ...tree, "fm/train-images-idx3-ubyte": gz.subarray(0, gz.length - 12) };
  await assert.rejects(() => loadFashionMnist("fm", { files: memoryFiles(damaged) }), {
    name: "SyntaxError",
    message: /^fm\/train-images-idx3-ubyte: damaged gzip data/,
  });
  assert.deepEqual([...await gunzip(gz)], [...tree["fm/train-images-idx3-ubyte"]]);

  // A small gzip that inflates far past what its header describes is stopped at the header's size, not
  // inflated whole first (one 28×28 image said, 64 MiB of zeros given: 800 bytes allowed).
  const bomb = new Uint8Array(16 + 64 * 2 ** 20);
  bomb.set(encodeIdx(new Uint8Array(784), [1, 28, 28]).subarray(0, 16));
  const bombed: Record<string, Uint8Array> = { ...tree, "fm/train-images-idx3-ubyte.gz": await gzip(bomb) };
  delete bombed["fm/train-images-idx3-ubyte"];
  await assert.rejects(() => loadFashionMnist("fm", { files: memoryFiles(bombed) }), {
    name: "SyntaxError",
    message: "fm/train-images-idx3-ubyte.gz: inflates to more than the 800 bytes its header describes",
  });
});

Deno.test("mnist: given a file instead of its folder, the error names the path", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "idx_test_" });
  try {
    const file = `${dir}/train-images-idx3-ubyte`;
    await Deno.writeFile(file, new Uint8Array(4));
    await assert.rejects(
      () => loadMnist(file),
      (e) => e instanceof Error && e.message.startsWith(`${file}/`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const canReadFashion =
  Deno.permissions.querySync({ name: "read", path: FASHION_MNIST_DIR }).state === "granted";
let fashionInstalled = false;
if (canReadFashion) {
  try {
    fashionInstalled = Deno.statSync(FASHION_MNIST_DIR).isDirectory;
  } catch {
    fashionInstalled = false;
  }
}

Deno.test({
  name: "loadFashionMnist reads Debian's dataset-fashion-mnist: 60,000 + 10,000 balanced 28×28 images",
  // Needs `apt-get install dataset-fashion-mnist` (.ci/run installs it): never skipped in CI.
  ignore: !fashionInstalled && Deno.env.get("CI") !== "true",
  fn: async () => {
    const data = await loadFashionMnist();
    assert.deepEqual([data.train.length, data.test.length, data.height, data.width], [60000, 10000, 28, 28]);
    assert.deepEqual(classCounts(data.train, 10), new Array(10).fill(6000));
    assert.deepEqual(classCounts(data.test, 10), new Array(10).fill(1000));
    // The first training image is an ankle boot, as in every Fashion-MNIST loader.
    assert.equal(data.classes[data.train.labels[0]], "Ankle boot");
    // The published normalisation constants are the training split's own statistics.
    const stats = channelStats(data.train, 1);
    assertClose("mean", stats.mean, data.mean, { atol: 1e-4, rtol: 0 });
    assertClose("std", stats.std, data.std, { atol: 1e-4, rtol: 0 });
  },
});
