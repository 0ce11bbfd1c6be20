/**
 * Image folders: `root/<class>/*.png|jpg|jpeg`, either split into `root/train/` and `root/val/` (or `test/`,
 * `valid/`, `validation/`) or one tree (`root/` or `root/train/` alone) split by a seeded, per-class validation
 * fraction. Every image is decoded, converted and resized to the target geometry and kept as uint8 CHW.
 */
import { decodeImage, toUint8CHW } from "../io/image.ts";
import {
  channelStats,
  type Dataset,
  denoFiles,
  type FileSource,
  joinPath,
  shuffledOrder,
  type Split,
} from "./dataset.ts";

/** Options for `loadImageFolder`. */
export interface ImageFolderOptions {
  /** Target channels: 1 (gray) or 3 (RGB); default 3. */
  channels?: number;
  /** Target height (default 32). */
  height?: number;
  /** Target width (default `height`). */
  width?: number;
  /** Fraction of each class held out for validation when there is no train/val split on disk (default 0.1). */
  valFraction?: number;
  /** Seed of that hold-out choice (default 0). */
  seed?: number;
  /** Normalisation mean; default: measured on the training split. */
  mean?: number[];
  /** Normalisation std; default: measured on the training split. */
  std?: number[];
  /** Data set name (default: the root directory's last component). */
  name?: string;
  /** Where the files are read from (default: the real file system). */
  files?: FileSource;
  /** Files decoded at once (default 8). */
  concurrency?: number;
}

const IMAGE_EXTENSION = /\.(png|jpe?g)$/i;
const VAL_NAMES = ["val", "valid", "validation", "test"];

interface Listing {
  classes: string[];
  /** Per class, its image paths in sorted order. */
  paths: string[][];
}

async function listClasses(files: FileSource, dir: string): Promise<Listing> {
  const entries = await files.readDir(dir);
  const classes = entries.filter((e) => e.isDirectory && !e.name.startsWith(".")).map((e) => e.name).sort();
  const paths: string[][] = [];
  for (const c of classes) {
    const inner = await files.readDir(joinPath(dir, c));
    paths.push(
      inner.filter((e) => e.isFile && IMAGE_EXTENSION.test(e.name)).map((e) => joinPath(dir, c, e.name))
        .sort(),
    );
  }
  return { classes, paths };
}

/** Decodes `items` (path, label) into a split, `concurrency` files at a time. */
async function decodeSplit(
  files: FileSource,
  items: { path: string; label: number }[],
  geometry: { channels: number; height: number; width: number },
  concurrency: number,
): Promise<Split> {
  const imageSize = geometry.channels * geometry.height * geometry.width;
  const images = new Uint8Array(items.length * imageSize);
  const labels = Int32Array.from(items, (it) => it.label);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      const image = decodeImage(await files.readFile(items[i].path), items[i].path);
      images.set(toUint8CHW(image, geometry), i * imageSize);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
  return { length: items.length, images, labels };
}

/**
 * Loads an image-folder data set, resized to `height`×`width` with `channels` channels; classes are the
 * subdirectory names in sorted order (as torchvision's `ImageFolder`).
 *
 * @example
 * ```ts ignore
 * import { loadImageFolder } from "./folder.ts";
 * const data = await loadImageFolder("photos", { height: 32, valFraction: 0.2 });
 * console.log(data.classes, data.train.length, data.test.length);
 * ```
 */
export async function loadImageFolder(root: string, options: ImageFolderOptions = {}): Promise<Dataset> {
  const {
    channels = 3,
    height = 32,
    width = height,
    valFraction = 0.1,
    seed = 0,
    files = denoFiles,
    concurrency = 8,
  } = options;
  if (channels !== 1 && channels !== 3) {
    throw new RangeError(`${root}: channels must be 1 or 3, got ${channels}`);
  }
  if (!(valFraction >= 0 && valFraction < 1)) {
    throw new RangeError(`${root}: valFraction must be in [0, 1), got ${valFraction}`);
  }
  if (!(Number.isInteger(concurrency) && concurrency >= 1)) {
    throw new RangeError(`${root}: concurrency must be a whole number ≥ 1, got ${concurrency}`);
  }
  const geometry = { channels, height, width };
  // With root/train/, the validation split is root/val/ (or valid/, validation/, test/) when present, else a
  // hold-out of root/train/; without it, root itself holds the class directories.
  const trainDir = joinPath(root, "train");
  const hasTrain = await files.exists(trainDir);
  let valDir: string | undefined;
  for (const name of hasTrain ? VAL_NAMES : []) {
    if (await files.exists(joinPath(root, name))) {
      valDir = joinPath(root, name);
      break;
    }
  }
  const split = valDir !== undefined;

  let classes: string[];
  const trainItems: { path: string; label: number }[] = [];
  const testItems: { path: string; label: number }[] = [];
  if (split) {
    const train = await listClasses(files, trainDir);
    const val = await listClasses(files, valDir!);
    classes = train.classes;
    train.paths.forEach((ps, label) => ps.forEach((path) => trainItems.push({ path, label })));
    val.classes.forEach((c, k) => {
      const label = classes.indexOf(c);
      if (label < 0) {
        throw new SyntaxError(`${valDir}/${c}: class "${c}" has no training directory in ${trainDir}`);
      }
      val.paths[k].forEach((path) => testItems.push({ path, label }));
    });
  } else {
    const all = await listClasses(files, hasTrain ? trainDir : root);
    classes = all.classes;
    all.paths.forEach((ps, label) => {
      // Stratified hold-out: a seeded permutation per class, the first ⌊fraction·n⌉ go to validation (never a
      // class's last image: every class must be trained on).
      const order = shuffledOrder(ps.length, seed, label);
      const held = Math.min(Math.round(valFraction * ps.length), ps.length - 1);
      order.forEach((i, rank) => (rank < held ? testItems : trainItems).push({ path: ps[i], label }));
    });
    testItems.sort((a, b) => a.label - b.label || (a.path < b.path ? -1 : 1));
    trainItems.sort((a, b) => a.label - b.label || (a.path < b.path ? -1 : 1));
  }
  if (classes.length === 0) throw new SyntaxError(`${root}: no class subdirectories found`);
  const trainRoot = hasTrain ? trainDir : root;
  if (trainItems.length === 0) {
    throw new SyntaxError(`${trainRoot}: no .png or .jpg images found for training`);
  }
  // A class without training images would be an output the model never learns; one class is no classifier.
  const counts = new Array<number>(classes.length).fill(0);
  for (const item of trainItems) counts[item.label]++;
  const empty = classes.filter((_, label) => counts[label] === 0);
  if (empty.length) {
    throw new SyntaxError(
      `${trainRoot}/${empty[0]}: no .png or .jpg images` +
        (empty.length > 1 ? ` (nor ${empty.slice(1).join(", ")})` : ""),
    );
  }
  if (classes.length === 1) {
    throw new SyntaxError(
      `${trainRoot}: one class folder (${classes[0]}); classification needs at least two`,
    );
  }
  if (split && testItems.length === 0) {
    throw new SyntaxError(`${valDir}: no .png or .jpg images to validate on`);
  }

  const train = await decodeSplit(files, trainItems, geometry, concurrency);
  const test = await decodeSplit(files, testItems, geometry, concurrency);
  const stats = options.mean && options.std
    ? { mean: options.mean, std: options.std }
    : channelStats(train, channels);
  if (stats.mean.length !== channels || stats.std.length !== channels) {
    throw new TypeError(
      `${root}: expected ${channels} means and stds, got ${stats.mean.length}, ${stats.std.length}`,
    );
  }
  return {
    name: options.name ?? root.replace(/\/+$/, "").split("/").pop()!,
    ...geometry,
    classes,
    mean: stats.mean,
    std: stats.std.map((s) => s > 0 ? s : 1),
    train,
    test,
  };
}
