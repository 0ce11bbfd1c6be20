/**
 * Checkpoints. Weights files (`last.safetensors`, `best.safetensors`) hold the official state dict plus metadata
 * (model, config, normalisation, class names), so `predict` needs nothing else and PyTorch loads them. The
 * resume file (`last.state.safetensors`) holds weights, AdamW moments, the weights' moving average (when kept) and
 * the run state in ONE file, so a kill at any moment leaves a consistent previous state: every file is written to
 * a temporary name and renamed.
 */
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic.ts";
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from "../io/safetensors.ts";
import { customConfig, type ModelConfig } from "../models/config.ts";
import type { CompactTransformer } from "../models/model.ts";
import type { Dataset } from "../data/dataset.ts";
import type { Trainer, TrainOptions, TrainState } from "./trainer.ts";

/** What a checkpoint says about its model and data. */
export interface CheckpointInfo {
  /** The full model configuration, validated. */
  config: ModelConfig;
  /** Per-channel mean of the training data (pixels scaled to [0, 1]), for normalising inputs. */
  mean: number[];
  /** Per-channel standard deviation of the training data (pixels scaled to [0, 1]). */
  std: number[];
  /** Class names in label order; `classes[argmax(logits)]` is the prediction. */
  classes: string[];
  /** The data set the model was trained on (its name, or "unknown"). */
  dataset: string;
}

/** Metadata strings describing the model and its data (stored in every weights file). */
export function describeModel(
  model: CompactTransformer,
  data: Pick<Dataset, "name" | "mean" | "std" | "classes">,
) {
  return {
    format: "cct-webgpu/1",
    model: model.config.name,
    config: JSON.stringify(model.config),
    mean: JSON.stringify(data.mean),
    std: JSON.stringify(data.std),
    classes: JSON.stringify(data.classes),
    dataset: data.name,
  };
}

/**
 * Reads {@link CheckpointInfo} back from a weights file's metadata; throws naming the file when absent.
 *
 * @param metadata The safetensors `__metadata__` of a file written by this library.
 * @param source The file's name, for error messages.
 * @returns The model configuration, normalisation and class names.
 * @throws {SyntaxError} If a field is missing or not valid JSON (e.g. an official PyTorch checkpoint).
 * @throws {RangeError} If the stored configuration is invalid.
 *
 * @example Classify an image with a trained checkpoint
 * ```ts
 * import {
 *   checkpointInfo,
 *   CompactTransformer,
 *   readImage,
 *   readSafetensorsFile,
 *   toModelInput,
 * } from "@compact-transformers/cct";
 *
 * const file = await readSafetensorsFile("runs/cifar/best.safetensors");
 * const info = checkpointInfo(file.metadata, "best.safetensors");
 * const model = await CompactTransformer.create(info.config);
 * await model.loadWeights(file.tensors);
 * const c = info.config;
 * const input = toModelInput(await readImage("cat.png"), {
 *   channels: c.inChannels,
 *   height: c.imgHeight,
 *   width: c.imgWidth,
 *   mean: info.mean,
 *   std: info.std,
 * });
 * const logits = await model.forward(input, [1, c.inChannels, c.imgHeight, c.imgWidth]);
 * console.log(info.classes[logits.indexOf(Math.max(...logits))]);
 * ```
 */
export function checkpointInfo(metadata: Record<string, string>, source: string): CheckpointInfo {
  return {
    config: checkpointConfig(metadata, source),
    mean: metadataField<number[]>(metadata, "mean", source),
    std: metadataField<number[]>(metadata, "std", source),
    classes: metadataField<string[]>(metadata, "classes", source),
    dataset: metadata.dataset ?? "unknown",
  };
}

/**
 * The model configuration alone from a weights file's metadata: what `CompactTransformer.saveWeights` writes,
 * so it reads files saved by the library as well as the trainer's checkpoints.
 *
 * @param metadata The safetensors `__metadata__`.
 * @param source The file's name, for error messages.
 * @returns The validated model configuration.
 * @throws {SyntaxError} If there is no valid "config" entry. {@link RangeError} If the configuration is invalid.
 */
export function checkpointConfig(metadata: Record<string, string>, source: string): ModelConfig {
  const raw = metadataField<ModelConfig>(metadata, "config", source);
  return customConfig(raw, {
    imgSize: [raw.imgHeight, raw.imgWidth],
    inChannels: raw.inChannels,
    numClasses: raw.numClasses,
    positionalEmbedding: raw.positionalEmbedding,
    dropout: raw.dropout,
    attentionDropout: raw.attentionDropout,
    stochasticDepth: raw.stochasticDepth,
    kernelSize: raw.kernelSize,
    convLayers: raw.convLayers,
  });
}

function metadataField<T>(metadata: Record<string, string>, key: string, source: string): T {
  if (!(key in metadata)) {
    throw new SyntaxError(
      `${source}: no "${key}" in the metadata (not a checkpoint written by this library?)`,
    );
  }
  try {
    return JSON.parse(metadata[key]) as T;
  } catch {
    throw new SyntaxError(`${source}: metadata "${key}" is not valid JSON`);
  }
}

/**
 * Writes `kind`.safetensors (weights + metadata) into `dir`, atomically.
 *
 * @param dir An existing directory.
 * @param kind The file's name without extension.
 * @param trainer The run whose weights to save.
 * @param options `ema`: save the trainer's moving average of the weights instead (metadata `weights: "ema"`).
 * @returns The path written.
 */
export async function saveWeightsCheckpoint(
  dir: string,
  kind: "last" | "best" | "last_ema",
  trainer: Trainer,
  { ema = false }: { ema?: boolean } = {},
): Promise<string> {
  const path = join(dir, `${kind}.safetensors`);
  const meta = {
    ...describeModel(trainer.model, trainer.data),
    train_state: JSON.stringify(trainer.state),
    ...(ema ? { weights: "ema" } : {}),
  };
  const bytes = ema
    ? await trainer.withEmaWeights(() => trainer.model.saveWeights(meta))
    : await trainer.model.saveWeights(meta);
  await writeFileAtomic(path, bytes);
  return path;
}

/**
 * Writes the resume file `last.state.safetensors`: weights, moments, options and state, atomically.
 *
 * With a moving average of the weights (`modelEmaDecay` > 0) it is saved too, as `ema.<name>` tensors.
 * The file is written to a temporary name and renamed, so an interrupted save leaves the previous one intact.
 * Waits for the GPU (it reads weights and moments back): call between epochs, e.g. from `onEpoch`.
 *
 * @param dir An existing directory.
 * @param trainer The run to save.
 * @param metadata More strings to store, read back as {@link TrainingState.metadata} (`cli.ts` keeps the data
 *   set's spec there, so `--resume` finds the data again).
 * @returns The path written.
 *
 * @example Save after every epoch
 * ```ts
 * import { CompactTransformer, loadDataset, saveTrainingState, Trainer } from "@compact-transformers/cct";
 *
 * const data = await loadDataset("synthetic:gray28");
 * const model = await CompactTransformer.create("cct_2_3x2_32", { imgSize: 28, inChannels: 1 });
 * await Deno.mkdir("runs/demo", { recursive: true });
 * const trainer = new Trainer(model, data, { epochs: 20 }, {
 *   onEpoch: async (_summary, t) => {
 *     await saveTrainingState("runs/demo", t);
 *   },
 * });
 * await trainer.run();
 * ```
 */
export async function saveTrainingState(
  dir: string,
  trainer: Trainer,
  metadata: Record<string, string> = {},
): Promise<string> {
  const path = join(dir, "last.state.safetensors");
  const weights = await trainer.model.getWeights();
  const { m, v } = await trainer.moments();
  const ema = await trainer.emaWeights();
  const tensors = new Map<string, TensorToWrite>();
  for (const s of trainer.model.specs) {
    tensors.set(s.name, { shape: s.shape, data: weights.get(s.name)! });
    if (ema) tensors.set(`${EMA_PREFIX}${s.name}`, { shape: s.shape, data: ema.get(s.name)! });
    if (s.trainable) {
      tensors.set(`optimizer.m.${s.name}`, { shape: s.shape, data: m.get(s.name)! });
      tensors.set(`optimizer.v.${s.name}`, { shape: s.shape, data: v.get(s.name)! });
    }
  }
  const meta = {
    ...metadata,
    ...describeModel(trainer.model, trainer.data),
    train_options: JSON.stringify(trainer.options),
    train_state: JSON.stringify(trainer.state),
  };
  await writeFileAtomic(path, serializeSafetensors(tensors, meta));
  return path;
}

/** Names of the moving average's tensors in a resume file: the parameter's name after this prefix. */
const EMA_PREFIX = "ema.";

/** A parsed resume file. */
export interface TrainingState {
  /** The model and data description, as in a weights file. */
  info: CheckpointInfo;
  /** The run's complete training options. */
  options: TrainOptions;
  /** Epochs and steps completed, best top-1 so far. */
  state: TrainState;
  /** Every parameter by official name, ready for `CompactTransformer.loadWeights`. */
  weights: Map<string, { shape: number[]; data: Float32Array }>;
  /** AdamW first moments by parameter name (trainable parameters only). */
  m: Map<string, Float32Array>;
  /** AdamW second moments by parameter name (trainable parameters only). */
  v: Map<string, Float32Array>;
  /** The moving average of the weights by parameter name, when the run keeps one (`modelEmaDecay` > 0). */
  ema?: Map<string, Float32Array>;
  /** Every metadata string of the file, including those the saver added. */
  metadata: Record<string, string>;
}

/**
 * Reads a resume file written by {@link saveTrainingState}; the whole file is validated before use.
 *
 * @param path The `last.state.safetensors` file.
 * @returns Everything needed to continue the run: model, weights, moments, options and progress.
 * @throws {SyntaxError} If the file is not a resume file.
 * @throws {TypeError} If a tensor does not hold float32 data.
 *
 * @example Resume an interrupted run
 * ```ts
 * import { CompactTransformer, loadDataset, loadTrainingState, Trainer } from "@compact-transformers/cct";
 *
 * const saved = await loadTrainingState("runs/demo/last.state.safetensors");
 * const data = await loadDataset("synthetic:gray28"); // the data set the run was started on
 * const model = await CompactTransformer.create(saved.info.config);
 * await model.loadWeights(saved.weights);
 * const trainer = new Trainer(model, data, saved.options);
 * trainer.state = { ...saved.state };
 * trainer.setMoments(saved.m, saved.v);
 * if (saved.ema) trainer.setEmaWeights(saved.ema);
 * await trainer.run(); // continues at epoch saved.state.epoch, on the same loss curve
 * ```
 */
export async function loadTrainingState(path: string): Promise<TrainingState> {
  const file = parseSafetensors(await Deno.readFile(path), path);
  const info = checkpointInfo(file.metadata, path);
  const json = <T>(key: string): T => {
    if (!file.metadata[key]) throw new SyntaxError(`${path}: no "${key}" in the metadata: not a resume file`);
    try {
      return JSON.parse(file.metadata[key]) as T;
    } catch {
      throw new SyntaxError(`${path}: metadata "${key}" is not valid JSON`);
    }
  };
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
  const ema = new Map<string, Float32Array>();
  for (const [name, t] of file.tensors) {
    if (!(t.data instanceof Float32Array)) throw new TypeError(`${path}: ${name} is not float data`);
    if (name.startsWith("optimizer.m.")) m.set(name.slice(12), t.data);
    else if (name.startsWith("optimizer.v.")) v.set(name.slice(12), t.data);
    else if (name.startsWith(EMA_PREFIX)) ema.set(name.slice(EMA_PREFIX.length), t.data);
    else weights.set(name, { shape: t.shape, data: t.data });
  }
  const state = json<TrainState>("train_state");
  const counts = [state?.epoch, state?.globalStep];
  if (!counts.every((n) => Number.isInteger(n) && n >= 0) || typeof state.bestTop1 !== "number") {
    throw new TypeError(
      `${path}: metadata "train_state" is not a valid run state: ${file.metadata.train_state}`,
    );
  }
  const options = json<TrainOptions>("train_options");
  if (typeof options !== "object" || options === null || !(options.batchSize >= 1)) {
    throw new TypeError(`${path}: metadata "train_options" does not describe a training run`);
  }
  return { info, options, state, weights, m, v, ...(ema.size ? { ema } : {}), metadata: file.metadata };
}
