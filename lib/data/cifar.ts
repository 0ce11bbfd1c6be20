/**
 * CIFAR-10 and CIFAR-100 in their binary distributions: fixed-size records of label byte(s) followed by
 * 3072 bytes — the 32×32 red, green and blue planes — which is already the CHW layout a `Split` holds.
 */
import { type Dataset, denoFiles, type FileSource, joinPath, type Split } from "./dataset.ts";

/** CIFAR-10's class names, in label order (as in `batches.meta.txt`). */
export const CIFAR10_CLASSES = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

/** Normalisation statistics from SPEC §4. */
export const CIFAR10_MEAN = [0.4914, 0.4822, 0.4465];
/** Normalisation statistics from SPEC §4. */
export const CIFAR10_STD = [0.2470, 0.2435, 0.2616];
/** Normalisation statistics from SPEC §4. */
export const CIFAR100_MEAN = [0.5071, 0.4867, 0.4408];
/** Normalisation statistics from SPEC §4. */
export const CIFAR100_STD = [0.2675, 0.2565, 0.2761];

const IMAGE_BYTES = 3 * 32 * 32;

/** How a record's label bytes are laid out and which one to use. */
export interface CifarRecordFormat {
  /** Label bytes before each image: 1 for CIFAR-10, 2 (coarse, fine) for CIFAR-100. */
  labelBytes: number;
  /** Which of the label bytes is the label (CIFAR-100: 0 coarse, 1 fine). */
  labelIndex: number;
  /** Labels must be below this. */
  classCount: number;
  /** Every label byte must be below its entry (CIFAR-100: 20 coarse, 100 fine), to catch misaligned files. */
  labelLimits?: number[];
}

/**
 * Parses CIFAR binary records into a split; `SyntaxError` naming `file` when the size is not a whole number of
 * records or a label is out of range.
 */
export function parseCifarRecords(bytes: Uint8Array, format: CifarRecordFormat, file = "<bytes>"): Split {
  const { labelBytes, labelIndex, classCount, labelLimits = [] } = format;
  const record = labelBytes + IMAGE_BYTES;
  if (bytes.length === 0 || bytes.length % record !== 0) {
    throw new SyntaxError(
      `${file}: ${bytes.length} bytes is not a whole number of ${record}-byte CIFAR records ` +
        `(${labelBytes} label byte${labelBytes === 1 ? "" : "s"} + 3072 image bytes)`,
    );
  }
  const length = bytes.length / record;
  const images = new Uint8Array(length * IMAGE_BYTES);
  const labels = new Int32Array(length);
  for (let i = 0; i < length; i++) {
    const at = i * record;
    labelLimits.forEach((limit, k) => {
      if (bytes[at + k] >= limit) {
        throw new SyntaxError(
          `${file}: record ${i} has ${
            bytes[at + k]
          } in label byte ${k}, not below ${limit} (is this the right ` +
            `CIFAR file?)`,
        );
      }
    });
    const label = bytes[at + labelIndex];
    if (label >= classCount) {
      throw new SyntaxError(
        `${file}: record ${i} has label ${label}, not below ${classCount} classes (is this the right CIFAR file?)`,
      );
    }
    labels[i] = label;
    images.set(bytes.subarray(at + labelBytes, at + record), i * IMAGE_BYTES);
  }
  return { length, images, labels };
}

/** Concatenates splits in order. */
export function concatSplits(splits: Split[]): Split {
  const length = splits.reduce((n, s) => n + s.length, 0);
  const images = new Uint8Array(splits.reduce((n, s) => n + s.images.length, 0));
  const labels = new Int32Array(length);
  let i = 0, b = 0;
  for (const s of splits) {
    images.set(s.images, b);
    labels.set(s.labels, i);
    b += s.images.length;
    i += s.length;
  }
  return { length, images, labels };
}

/** Encodes a split as CIFAR binary records (one label byte, or `[coarse, fine]` for CIFAR-100) — for tests. */
export function encodeCifarRecords(images: Uint8Array, labels: Int32Array[], count: number): Uint8Array {
  const record = labels.length + IMAGE_BYTES;
  const out = new Uint8Array(count * record);
  for (let i = 0; i < count; i++) {
    labels.forEach((l, k) => (out[i * record + k] = l[i]));
    out.set(images.subarray(i * IMAGE_BYTES, (i + 1) * IMAGE_BYTES), i * record + labels.length);
  }
  return out;
}

/** The directory itself or the archive's own subdirectory when the files are there. */
async function resolveDir(
  files: FileSource,
  dir: string,
  probe: string,
  archiveDir: string,
): Promise<string> {
  if (await files.exists(joinPath(dir, probe))) return dir;
  const nested = joinPath(dir, archiveDir);
  if (await files.exists(joinPath(nested, probe))) return nested;
  throw new Deno.errors.NotFound(`${dir}: no ${probe} here or in ${archiveDir}/`);
}

/** Reads a names file (one name per line, blank lines ignored), or returns `fallback` when it is absent. */
async function readNames(
  files: FileSource,
  path: string,
  count: number,
  fallback: string[],
): Promise<string[]> {
  let text: string;
  try {
    text = new TextDecoder().decode(await files.readFile(path));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return fallback;
    throw error;
  }
  const names = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
  if (names.length !== count) {
    throw new SyntaxError(`${path}: expected ${count} class names, found ${names.length}`);
  }
  return names;
}

async function readSplit(files: FileSource, path: string, format: CifarRecordFormat): Promise<Split> {
  return parseCifarRecords(await files.readFile(path), format, path);
}

/** Options for the CIFAR loaders. */
export interface CifarOptions {
  /** Where the files are read from (default: the real file system). */
  files?: FileSource;
}

/**
 * Loads CIFAR-10 from `dir` holding `data_batch_1.bin`…`data_batch_5.bin`, `test_batch.bin` and optionally
 * `batches.meta.txt` (or from its `cifar-10-batches-bin/` subdirectory, as the archive unpacks).
 *
 * @example
 * ```ts ignore
 * import { loadCifar10 } from "./cifar.ts";
 * const data = await loadCifar10("data/cifar-10-batches-bin");
 * console.log(data.train.length, data.test.length); // 50000 10000
 * ```
 */
export async function loadCifar10(dir: string, { files = denoFiles }: CifarOptions = {}): Promise<Dataset> {
  const root = await resolveDir(files, dir, "test_batch.bin", "cifar-10-batches-bin");
  const format = { labelBytes: 1, labelIndex: 0, classCount: 10 };
  const parts: Split[] = [];
  for (let k = 1; k <= 5; k++) {
    parts.push(await readSplit(files, joinPath(root, `data_batch_${k}.bin`), format));
  }
  return {
    name: "cifar10",
    channels: 3,
    height: 32,
    width: 32,
    classes: await readNames(files, joinPath(root, "batches.meta.txt"), 10, CIFAR10_CLASSES),
    mean: CIFAR10_MEAN,
    std: CIFAR10_STD,
    train: concatSplits(parts),
    test: await readSplit(files, joinPath(root, "test_batch.bin"), format),
  };
}

/** Options for `loadCifar100`. */
export interface Cifar100Options extends CifarOptions {
  /** The 100 fine classes (default) or the 20 coarse superclasses. */
  labels?: "fine" | "coarse";
}

/**
 * Loads CIFAR-100 from `dir` holding `train.bin`, `test.bin` and `fine_label_names.txt` /
 * `coarse_label_names.txt` (or from its `cifar-100-binary/` subdirectory). Without the names file the classes
 * are named by number.
 */
export async function loadCifar100(
  dir: string,
  { files = denoFiles, labels = "fine" }: Cifar100Options = {},
): Promise<Dataset> {
  const root = await resolveDir(files, dir, "test.bin", "cifar-100-binary");
  const classCount = labels === "fine" ? 100 : 20;
  const format = { labelBytes: 2, labelIndex: labels === "fine" ? 1 : 0, classCount, labelLimits: [20, 100] };
  const numbered = Array.from({ length: classCount }, (_, i) => String(i));
  return {
    name: labels === "fine" ? "cifar100" : "cifar100-coarse",
    channels: 3,
    height: 32,
    width: 32,
    classes: await readNames(files, joinPath(root, `${labels}_label_names.txt`), classCount, numbered),
    mean: CIFAR100_MEAN,
    std: CIFAR100_STD,
    train: await readSplit(files, joinPath(root, "train.bin"), format),
    test: await readSplit(files, joinPath(root, "test.bin"), format),
  };
}
