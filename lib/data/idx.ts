/**
 * MNIST and Fashion-MNIST in the IDX format (raw or gzip): big-endian headers, magic 0x00000803 for images
 * (unsigned bytes, 3 dimensions) and 0x00000801 for labels (unsigned bytes, 1 dimension).
 */
import { type Dataset, denoFiles, type FileSource, joinPath, type Split } from "./dataset.ts";

/** Where Debian's `dataset-fashion-mnist` package installs the four gzip files. */
export const FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

/** Fashion-MNIST's class names, in label order. */
export const FASHION_MNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

/** MNIST's class names: the digits. */
export const MNIST_CLASSES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

const IMAGES_MAGIC = 0x00000803;
const LABELS_MAGIC = 0x00000801;

/** True when the bytes start with the gzip magic 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * Inflates gzip bytes with the built-in `DecompressionStream`; errors name `file`. `maxBytes`, given the output so
 * far, returns how much output the data may have (Infinity while it cannot tell yet), so a small file cannot
 * inflate to gigabytes before its header is checked.
 */
export async function gunzip(
  bytes: Uint8Array,
  file = "<bytes>",
  maxBytes: (head: Uint8Array) => number = () => Infinity,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0, limit = Infinity;
  try {
    const reader = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
      .pipeThrough(new DecompressionStream("gzip")).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      total += value.length;
      if (limit === Infinity) limit = maxBytes(concat(chunks, total));
      if (total > limit) {
        await reader.cancel();
        throw new SyntaxError(`${file}: inflates to more than the ${limit} bytes its header describes`);
      }
    }
  } catch (error) {
    if (error instanceof SyntaxError && error.message.startsWith(`${file}: inflates`)) throw error;
    const message = error instanceof Error ? error.message : String(error);
    throw new SyntaxError(`${file}: damaged gzip data: ${message}`, { cause: error });
  }
  return concat(chunks, total);
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** The size an IDX file's header describes, header included; Infinity until the header is all there. */
function idxSize(head: Uint8Array): number {
  if (head.length < 4) return Infinity;
  const rank = head[3], headerSize = 4 + 4 * rank;
  if (head.length < headerSize) return Infinity;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  let size = 1;
  for (let i = 0; i < rank; i++) size *= view.getUint32(4 + 4 * i, false);
  return headerSize + size;
}

function hex(n: number): string {
  return "0x" + (n >>> 0).toString(16).padStart(8, "0");
}

/** Reads the IDX header, checking the magic and that the data length matches the dimensions exactly. */
function parseIdx(
  bytes: Uint8Array,
  file: string,
  magic: number,
  what: string,
): { dims: number[]; data: Uint8Array } {
  const rank = magic & 0xff;
  const headerSize = 4 + 4 * rank;
  const tooShort = () =>
    new SyntaxError(
      `${file}: ${bytes.length} bytes is too short for an IDX ${what} header (${headerSize} bytes)`,
    );
  if (bytes.length < 4) throw tooShort();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const found = view.getUint32(0, false);
  if (found !== magic) {
    throw new SyntaxError(
      `${file}: expected IDX ${what} magic ${hex(magic)} (unsigned bytes, ${rank} dimension${
        rank === 1 ? "" : "s"
      }), found ${hex(found)}`,
    );
  }
  if (bytes.length < headerSize) throw tooShort();
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false));
  const expected = dims.reduce((a, b) => a * b, 1);
  const actual = bytes.length - headerSize;
  if (actual !== expected) {
    throw new SyntaxError(
      `${file}: header says ${dims.join("×")} = ${expected} bytes of ${what}, the file holds ${actual}`,
    );
  }
  return { dims, data: bytes.subarray(headerSize) };
}

/** Parses an IDX image file (raw bytes, already inflated): `count` images of `height`×`width` bytes. */
export function parseIdxImages(
  bytes: Uint8Array,
  file = "<bytes>",
): { count: number; height: number; width: number; images: Uint8Array } {
  const { dims: [count, height, width], data } = parseIdx(bytes, file, IMAGES_MAGIC, "images");
  if (height === 0 || width === 0) throw new SyntaxError(`${file}: images of ${height}×${width} pixels`);
  return { count, height, width, images: data };
}

/** Parses an IDX label file (raw bytes, already inflated), checking every label is below `classCount`. */
export function parseIdxLabels(bytes: Uint8Array, file = "<bytes>", classCount = 256): Int32Array {
  const { data } = parseIdx(bytes, file, LABELS_MAGIC, "labels");
  const labels = Int32Array.from(data);
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= classCount) {
      throw new SyntaxError(`${file}: label ${labels[i]} at index ${i} is not below ${classCount} classes`);
    }
  }
  return labels;
}

/** Encodes images or labels as IDX bytes (uncompressed) — for tests and for exporting subsets. */
export function encodeIdx(data: Uint8Array, dims: number[]): Uint8Array {
  const magic = dims.length === 1 ? LABELS_MAGIC : (0x0800 | dims.length);
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, magic, false);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

/** Finds `base` or `base.gz` (also the `train-images.idx3-ubyte` spelling) in `dir`, reads and inflates it. */
async function readIdxFile(
  files: FileSource,
  dir: string,
  base: string,
): Promise<{ path: string; bytes: Uint8Array }> {
  const names = [base, base + ".gz", base.replace(/-idx/, ".idx"), base.replace(/-idx/, ".idx") + ".gz"];
  for (const name of names) {
    const path = joinPath(dir, name);
    let bytes: Uint8Array;
    try {
      bytes = await files.readFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      // Deno leaves the path out of some errors (NotADirectory: `mnist:` given a file, not its folder).
      if (error instanceof Error && !error.message.includes(path)) {
        error.message = `${path}: ${error.message}`;
      }
      throw error;
    }
    return { path, bytes: isGzip(bytes) ? await gunzip(bytes, path, idxSize) : bytes };
  }
  throw new Deno.errors.NotFound(`${dir}: none of ${names.join(", ")} found`);
}

async function loadIdxSplit(
  files: FileSource,
  dir: string,
  prefix: string,
  classCount: number,
): Promise<{ split: Split; height: number; width: number }> {
  const imageFile = await readIdxFile(files, dir, `${prefix}-images-idx3-ubyte`);
  const labelFile = await readIdxFile(files, dir, `${prefix}-labels-idx1-ubyte`);
  const { count, height, width, images } = parseIdxImages(imageFile.bytes, imageFile.path);
  if (count === 0) throw new SyntaxError(`${imageFile.path}: holds no images`);
  const labels = parseIdxLabels(labelFile.bytes, labelFile.path, classCount);
  if (labels.length !== count) {
    throw new SyntaxError(
      `${labelFile.path}: holds ${labels.length} labels but ${imageFile.path} holds ${count} images`,
    );
  }
  return { split: { length: count, images, labels }, height, width };
}

/** Options for the IDX loaders. */
export interface IdxOptions {
  /** Where the files are read from (default: the real file system). */
  files?: FileSource;
}

/**
 * Loads an MNIST-style directory holding `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
 * `t10k-images-idx3-ubyte[.gz]` and `t10k-labels-idx1-ubyte[.gz]`.
 */
export async function loadIdxDataset(
  dir: string,
  info: Pick<Dataset, "name" | "classes" | "mean" | "std">,
  { files = denoFiles }: IdxOptions = {},
): Promise<Dataset> {
  const train = await loadIdxSplit(files, dir, "train", info.classes.length);
  const test = await loadIdxSplit(files, dir, "t10k", info.classes.length);
  if (train.height !== test.height || train.width !== test.width) {
    throw new SyntaxError(
      `${dir}: training images are ${train.height}×${train.width}, test images ${test.height}×${test.width}`,
    );
  }
  return {
    ...info,
    channels: 1,
    height: train.height,
    width: train.width,
    train: train.split,
    test: test.split,
  };
}

/**
 * Loads Fashion-MNIST (60,000 + 10,000 gray 28×28 images, 10 classes); by default from where Debian's
 * `dataset-fashion-mnist` package installs it.
 *
 * @example
 * ```ts ignore
 * import { loadFashionMnist } from "./idx.ts";
 * const data = await loadFashionMnist();
 * console.log(data.train.length, data.classes[data.train.labels[0]]); // 60000 "Ankle boot"
 * ```
 */
export function loadFashionMnist(
  dir: string = FASHION_MNIST_DIR,
  options: IdxOptions = {},
): Promise<Dataset> {
  return loadIdxDataset(dir, {
    name: "fashion-mnist",
    classes: FASHION_MNIST_CLASSES,
    mean: [0.2860],
    std: [0.3530],
  }, options);
}

/** Loads MNIST (60,000 + 10,000 gray 28×28 digits) from a directory of IDX files. */
export function loadMnist(dir: string, options: IdxOptions = {}): Promise<Dataset> {
  return loadIdxDataset(
    dir,
    { name: "mnist", classes: MNIST_CLASSES, mean: [0.1307], std: [0.3081] },
    options,
  );
}
