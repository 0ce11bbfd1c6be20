/**
 * The shape every data set takes: two in-memory splits of uint8 CHW images with int32 labels, plus deterministic
 * batching, a prefetching async iterator and the small file-access seam the loaders read through.
 */
import { deriveSeed, randomU32 } from "../gpu/random.ts";

/** One split of a data set, kept in memory (these sets are small). */
export interface Split {
  /** Number of images. */
  length: number;
  /** `length·C·H·W` bytes, each image CHW (all of channel 0, then channel 1, …), row-major. */
  images: Uint8Array;
  /** `length` class indices in `[0, classes.length)`. */
  labels: Int32Array;
}

/** A classification data set: geometry, class names, normalisation statistics and the two splits. */
export interface Dataset {
  /** Short identifier, e.g. `"fashion-mnist"`, `"cifar10"`, `"synthetic-shapes"`. */
  name: string;
  /** Channels per image (C): 1 for grey-scale, 3 for RGB. */
  channels: number;
  /** Image height in pixels (H). */
  height: number;
  /** Image width in pixels (W). */
  width: number;
  /** Class names; a label is an index into this list. */
  classes: string[];
  /** Per-channel mean of the pixel values scaled to [0, 1], for `(x/255 − mean)/std`. */
  mean: number[];
  /** Per-channel standard deviation of the pixel values scaled to [0, 1]. */
  std: number[];
  /** The training split. */
  train: Split;
  /** The held-out split used for evaluation (may be empty). */
  test: Split;
}

/** One batch: `count` images (CHW each, back to back) and their labels. */
export interface Batch {
  /** `count·C·H·W` bytes. */
  images: Uint8Array;
  /** `count` labels. */
  labels: Int32Array;
  /** Number of images in this batch (smaller than the batch size only for the last batch without `dropLast`). */
  count: number;
  /** Position of each image in the split, for debugging and for evaluation bookkeeping. */
  indices: Int32Array;
}

/** How `batches` orders and cuts a split. */
export interface BatchOptions {
  /** Visit the split in a pseudo-random order (default false: in order). */
  shuffle?: boolean;
  /** Run seed of the shuffle (default 0). */
  seed?: number;
  /** Epoch number: each (seed, epoch) pair gives its own order, the same on every run (default 0). */
  epoch?: number;
  /** Leave out the last batch when it would be smaller than `batchSize` (default false). */
  dropLast?: boolean;
}

/** Site number mixed into the shuffle seed, so shuffles never share random streams with other consumers. */
const SHUFFLE_SITE = 0x5348_5546; // "SHUF"

/**
 * Checks that a split is self-consistent for images of `imageSize` bytes and labels below `classCount`.
 * Throws a `TypeError` naming `what` on a length mismatch and a `RangeError` on a bad label.
 */
export function validateSplit(what: string, split: Split, imageSize: number, classCount: number): void {
  if (split.images.length !== split.length * imageSize) {
    throw new TypeError(
      `${what}: expected ${split.length} images of ${imageSize} bytes (${split.length * imageSize} bytes), ` +
        `got ${split.images.length} bytes`,
    );
  }
  if (split.labels.length !== split.length) {
    throw new TypeError(`${what}: expected ${split.length} labels, got ${split.labels.length}`);
  }
  for (let i = 0; i < split.length; i++) {
    const label = split.labels[i];
    if (!(label >= 0 && label < classCount)) {
      throw new RangeError(`${what}: label ${label} at index ${i} is outside [0, ${classCount})`);
    }
  }
}

/**
 * A permutation of `0..n-1` that depends only on `(n, seed, epoch)`: a Fisher–Yates shuffle driven by the
 * counter-based hash of `lib/gpu/random.ts`, so it is the same on every machine and every run.
 */
export function shuffledOrder(n: number, seed = 0, epoch = 0): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const stream = deriveSeed(seed, epoch, SHUFFLE_SITE);
  for (let i = n - 1; i > 0; i--) {
    // Multiply-shift maps a u32 onto [0, i] with a bias below 2^-32·n, far under anything measurable here.
    const j = Math.floor((randomU32(stream, i) / 4294967296) * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** Number of batches `batches(split, batchSize, { dropLast })` yields. */
export function batchCount(length: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(length / batchSize) : Math.ceil(length / batchSize);
}

/**
 * Cuts a split into batches, in order or shuffled per `(seed, epoch)`. Every batch owns fresh arrays, so a
 * consumer may keep one while the next is being gathered (see `prefetch`).
 *
 * @example Two epochs of shuffled batches
 * ```ts
 * import { batches } from "./dataset.ts";
 * const split = { length: 5, images: new Uint8Array(5 * 4), labels: Int32Array.from([0, 1, 0, 1, 0]) };
 * for (const epoch of [0, 1]) {
 *   for (const batch of batches(split, 2, { shuffle: true, seed: 1, epoch })) console.log(batch.labels);
 * }
 * ```
 */
export function* batches(split: Split, batchSize: number, options: BatchOptions = {}): Generator<Batch> {
  const { shuffle = false, seed = 0, epoch = 0, dropLast = false } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`batches: batchSize must be a positive integer, got ${batchSize}`);
  }
  const n = split.length;
  const imageSize = n > 0 ? split.images.length / n : 0;
  if (!Number.isInteger(imageSize) || split.labels.length !== n) {
    throw new TypeError(
      `batches: split of ${n} images has ${split.images.length} image bytes and ${split.labels.length} labels`,
    );
  }
  const order = shuffle ? shuffledOrder(n, seed, epoch) : null;
  const total = batchCount(n, batchSize, dropLast);
  for (let b = 0; b < total; b++) {
    const start = b * batchSize;
    const count = Math.min(batchSize, n - start);
    const images = new Uint8Array(count * imageSize);
    const labels = new Int32Array(count);
    const indices = new Int32Array(count);
    for (let k = 0; k < count; k++) {
      const i = order ? order[start + k] : start + k;
      indices[k] = i;
      labels[k] = split.labels[i];
      images.set(split.images.subarray(i * imageSize, (i + 1) * imageSize), k * imageSize);
    }
    yield { images, labels, count, indices };
  }
}

/**
 * Runs `depth` items ahead of the consumer: while the caller awaits its GPU work on item `i`, items `i+1…i+depth`
 * are produced in macrotasks, so gathering or decoding the next batch overlaps the current step.
 *
 * @example Overlap batch gathering with training
 * ```ts
 * import { batches, prefetch } from "./dataset.ts";
 * const split = { length: 4, images: new Uint8Array(4 * 3), labels: new Int32Array(4) };
 * for await (const batch of prefetch(batches(split, 2, { shuffle: true }))) {
 *   await new Promise((resolve) => setTimeout(resolve, 1)); // the training step
 *   console.log(batch.count);
 * }
 * ```
 */
export async function* prefetch<T>(source: Iterable<T> | AsyncIterable<T>, depth = 1): AsyncGenerator<T> {
  if (!Number.isInteger(depth) || depth < 1) {
    throw new RangeError(`prefetch: depth must be a positive integer, got ${depth}`);
  }
  const iterator: Iterator<T> | AsyncIterator<T> = Symbol.asyncIterator in source
    ? (source as AsyncIterable<T>)[Symbol.asyncIterator]()
    : (source as Iterable<T>)[Symbol.iterator]();
  // Each pull starts in its own macrotask, so a synchronous producer runs while the consumer is awaiting.
  const pull = (): Promise<IteratorResult<T>> =>
    new Promise((resolve, reject) =>
      setTimeout(() => {
        try {
          Promise.resolve(iterator.next()).then(resolve, reject);
        } catch (error) {
          reject(error);
        }
      }, 0)
    );
  const queue: Promise<IteratorResult<T>>[] = [];
  // Pulls are chained so the producer never sees two next() calls at once.
  let tail: Promise<unknown> = Promise.resolve();
  const enqueue = () => {
    const next = tail.then(pull);
    tail = next.catch(() => {});
    queue.push(next);
  };
  try {
    for (let i = 0; i < depth; i++) enqueue();
    while (true) {
      const result = await queue.shift()!;
      if (result.done) return;
      enqueue();
      yield result.value;
    }
  } finally {
    // Let a pull that is already running finish before closing the source, then close it.
    await tail;
    await iterator.return?.();
  }
}

/** Labels per class: `counts[c]` is the number of images of class `c` in the split. */
export function classCounts(split: Split, classCount: number): number[] {
  const counts = new Array<number>(classCount).fill(0);
  for (let i = 0; i < split.length; i++) counts[split.labels[i]]++;
  return counts;
}

/**
 * Per-channel mean and standard deviation of a split's pixels scaled to [0, 1] (the statistics `Dataset.mean`
 * and `Dataset.std` hold), computed in float64.
 */
export function channelStats(split: Split, channels: number): { mean: number[]; std: number[] } {
  const plane = split.length > 0 ? split.images.length / (split.length * channels) : 0;
  // A histogram per channel: integer increments are far cheaper than float sums over tens of millions of bytes.
  const histogram = new Float64Array(channels * 256);
  const images = split.images;
  for (let i = 0; i < split.length; i++) {
    for (let c = 0; c < channels; c++) {
      const base = (i * channels + c) * plane, offset = c * 256;
      for (let p = base; p < base + plane; p++) histogram[offset + images[p]]++;
    }
  }
  const mean: number[] = [], std: number[] = [];
  for (let c = 0; c < channels; c++) {
    let n = 0, sum = 0, sumSq = 0;
    for (let v = 0; v < 256; v++) {
      const k = histogram[c * 256 + v];
      n += k;
      sum += k * v;
      sumSq += k * v * v;
    }
    const m = sum / Math.max(n, 1);
    mean.push(m / 255);
    std.push(Math.sqrt(Math.max(0, sumSq / Math.max(n, 1) - m * m)) / 255);
  }
  return { mean, std };
}

/**
 * Converts uint8 CHW images (any number, back to back) to float32 `(x/255 − mean[c])/std[c]` — the host-side twin
 * of the GPU normalisation, for evaluation scripts and tests.
 */
export function normalizeImages(
  images: Uint8Array,
  geometry: Pick<Dataset, "channels" | "height" | "width" | "mean" | "std">,
  out: Float32Array = new Float32Array(images.length),
): Float32Array {
  const { channels, height, width, mean, std } = geometry;
  if (mean.length !== channels || std.length !== channels) {
    throw new TypeError(
      `normalizeImages: expected ${channels} means and stds, got ${mean.length} and ${std.length}`,
    );
  }
  const plane = height * width;
  if (images.length % (channels * plane) !== 0) {
    throw new TypeError(
      `normalizeImages: ${images.length} bytes is not a whole number of ${channels}×${height}×${width} images`,
    );
  }
  if (out.length < images.length) {
    throw new TypeError(`normalizeImages: output holds ${out.length} values, need ${images.length}`);
  }
  for (let base = 0; base < images.length; base += plane) {
    const c = (base / plane) % channels;
    const scale = 1 / (255 * std[c]), shift = mean[c] / std[c];
    for (let p = 0; p < plane; p++) out[base + p] = images[base + p] * scale - shift;
  }
  return out;
}

/** A directory entry as the loaders see it. */
export interface FileEntry {
  /** Base name of the entry (no directory part). */
  name: string;
  /** True for a regular file. */
  isFile: boolean;
  /** True for a directory. */
  isDirectory: boolean;
}

/**
 * The file access the loaders use: the real file system by default (`denoFiles`), or an in-memory tree
 * (`memoryFiles`) for tests and for data that arrives from elsewhere (a fetch, an archive).
 */
export interface FileSource {
  /** Reads a whole file; rejects with `Deno.errors.NotFound` when it does not exist. */
  readFile(path: string): Promise<Uint8Array>;
  /** Lists a directory; rejects with `Deno.errors.NotFound` when it does not exist. */
  readDir(path: string): Promise<FileEntry[]>;
  /** True when `path` names an existing file or directory. */
  exists(path: string): Promise<boolean>;
}

/** The real file system through Deno's APIs. */
export const denoFiles: FileSource = {
  readFile: (path) => Deno.readFile(path),
  async readDir(path) {
    const entries: FileEntry[] = [];
    for await (const e of Deno.readDir(path)) {
      entries.push({ name: e.name, isFile: e.isFile, isDirectory: e.isDirectory });
    }
    return entries;
  },
  async exists(path) {
    try {
      await Deno.stat(path);
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return false;
      throw error;
    }
  },
};

/**
 * An in-memory file tree: keys are slash-separated paths (`"root/cat/1.png"`), values the file bytes.
 * Directories exist implicitly as prefixes of file paths.
 */
export function memoryFiles(files: Record<string, Uint8Array>): FileSource {
  const clean = (p: string) => p.replace(/\/+$/, "").replace(/\/+/g, "/");
  const table = new Map(Object.entries(files).map(([k, v]) => [clean(k), v]));
  const isDir = (p: string) => {
    const prefix = clean(p) + "/";
    for (const k of table.keys()) if (k.startsWith(prefix)) return true;
    return false;
  };
  return {
    readFile(path) {
      const data = table.get(clean(path));
      return data ? Promise.resolve(data) : Promise.reject(new Deno.errors.NotFound(`${path}: no such file`));
    },
    readDir(path) {
      const prefix = clean(path) + "/";
      if (!isDir(path)) return Promise.reject(new Deno.errors.NotFound(`${path}: no such directory`));
      const seen = new Map<string, FileEntry>();
      for (const k of table.keys()) {
        if (!k.startsWith(prefix)) continue;
        const rest = k.slice(prefix.length);
        const slash = rest.indexOf("/");
        const name = slash < 0 ? rest : rest.slice(0, slash);
        seen.set(name, { name, isFile: slash < 0, isDirectory: slash >= 0 });
      }
      return Promise.resolve([...seen.values()]);
    },
    exists: (path) => Promise.resolve(table.has(clean(path)) || isDir(path)),
  };
}

/** Joins path parts with single slashes. */
export function joinPath(...parts: string[]): string {
  return parts.filter((p) => p !== "").join("/").replace(/\/+/g, "/");
}
