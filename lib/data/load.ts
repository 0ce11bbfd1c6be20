/**
 * One entry point for the CLI and scripts: a data set named by a short spec string, e.g. `synthetic`,
 * `synthetic:gray28`, `fashion-mnist`, `mnist:data/mnist`, `cifar10:data/cifar-10-batches-bin`,
 * `cifar100:data/cifar-100-binary`, `cifar100-coarse:…` or `folder:photos`.
 */
import { loadCifar10, loadCifar100 } from "./cifar.ts";
import {
  type Batch,
  batches,
  type BatchOptions,
  type Dataset,
  type FileSource,
  prefetch,
  type Split,
} from "./dataset.ts";
import { loadImageFolder } from "./folder.ts";
import { FASHION_MNIST_DIR, loadFashionMnist, loadMnist } from "./idx.ts";
import { createSynthetic } from "./synthetic.ts";

/** The data set kinds `loadDataset` understands. */
export const DATASET_KINDS = [
  "synthetic",
  "fashion-mnist",
  "mnist",
  "cifar10",
  "cifar100",
  "cifar100-coarse",
  "folder",
];

/** Options passed through to the loaders. */
export interface LoadOptions {
  /** Seed of the synthetic set and of a folder's validation hold-out (default 0). */
  seed?: number;
  /** Target size of image folders (default 32). */
  size?: number;
  /** Target channels of image folders (default 3). */
  channels?: number;
  /** Where files are read from (default: the real file system). */
  files?: FileSource;
}

/**
 * Loads the data set a spec names: `kind` or `kind:argument`, where the argument is a directory (for
 * `synthetic`: `gray` / `rgb`, optionally followed by the image size, e.g. `gray28`).
 *
 * @param spec The data set, e.g. `"synthetic:gray28"` or `"cifar10:data/cifar-10-batches-bin"`.
 * @param options Seed, folder geometry and the file source.
 * @returns The whole data set, both splits in memory.
 * @throws {TypeError} If the kind is unknown or needs a directory that the spec does not give.
 *
 * @example The embedded default
 * ```ts
 * import { loadDataset } from "@compact-transformers/cct";
 *
 * const data = await loadDataset("synthetic:gray28");
 * console.log(data.channels, data.height, data.train.length); // 1 28 12000
 * ```
 *
 * @example CIFAR-10 from the official binary archive, extracted
 * ```ts
 * import { loadDataset } from "@compact-transformers/cct";
 *
 * const cifar = await loadDataset("cifar10:data/cifar-10-batches-bin");
 * console.log(cifar.classes.length, cifar.train.length, cifar.test.length); // 10 50000 10000
 * ```
 */
export async function loadDataset(spec: string, options: LoadOptions = {}): Promise<Dataset> {
  const colon = spec.indexOf(":");
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const arg = colon < 0 ? "" : spec.slice(colon + 1);
  const { seed = 0, files } = options;
  const needDir = () => {
    if (arg === "") {
      throw new TypeError(`dataset "${spec}": ${kind} needs a directory, as in "${kind}:path/to/dir"`);
    }
    return arg;
  };
  switch (kind) {
    case "synthetic": {
      const match = /^(gray|rgb)?(\d+)?$/.exec(arg);
      if (!match) {
        throw new TypeError(`dataset "${spec}": expected synthetic[:gray|rgb][size], e.g. synthetic:gray28`);
      }
      const channels = match[1] === "gray" ? 1 : 3;
      return createSynthetic({ seed, channels, size: match[2] ? Number(match[2]) : 32 });
    }
    case "fashion-mnist":
      return await loadFashionMnist(arg || FASHION_MNIST_DIR, { files });
    case "mnist":
      return await loadMnist(needDir(), { files });
    case "cifar10":
      return await loadCifar10(needDir(), { files });
    case "cifar100":
    case "cifar100-coarse":
      return await loadCifar100(needDir(), { files, labels: kind === "cifar100" ? "fine" : "coarse" });
    case "folder":
      return await loadImageFolder(needDir(), {
        files,
        seed,
        height: options.size ?? 32,
        channels: options.channels ?? 3,
      });
    default:
      throw new TypeError(
        `dataset "${spec}": unknown kind "${kind}", expected one of ${DATASET_KINDS.join(", ")}`,
      );
  }
}

/**
 * `batches` behind `prefetch`: the usual training loop's source, gathering batch `i+1` while step `i` runs.
 *
 * @example
 * ```ts
 * import { createSynthetic } from "./synthetic.ts";
 * import { prefetchBatches } from "./load.ts";
 * const data = createSynthetic({ trainSize: 256, testSize: 0 });
 * for await (const batch of prefetchBatches(data.train, 128, { shuffle: true, seed: 1, epoch: 0 })) {
 *   console.log(batch.count); // 128, 128
 * }
 * ```
 */
export function prefetchBatches(
  split: Split,
  batchSize: number,
  options: BatchOptions = {},
  depth = 1,
): AsyncGenerator<Batch> {
  return prefetch(batches(split, batchSize, options), depth);
}
