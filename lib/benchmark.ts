/**
 * Model-level throughput: inference images per second at a batch size, batch-1 latency, and training images per
 * second (a real training step: augmentation, forward, loss, backward, AdamW, one submission each), measured on
 * random data of the model's input shape. Used by `cli.ts bench` and `deno task bench`.
 */
import type { Dataset } from "./data/dataset.ts";
import { CompactTransformer } from "./models/model.ts";
import type { ModelOptions } from "./models/config.ts";
import { Trainer } from "./train/trainer.ts";

/** What {@link benchmarkModel} measured (medians). */
export interface ModelBenchmark {
  /** Registered model name, e.g. "cct_7_3x1_32". */
  model: string;
  /** GPU adapter description (`Gpu.description`). */
  adapter: string;
  /** Input shape as "C×H×W", e.g. "3×32×32". */
  input: string;
  /** Batch size of the inference and training measurements. */
  batch: number;
  /** Inference throughput at `batch`, images per second (forward pass including upload and read-back). */
  inferenceImagesPerSecond: number;
  /** Wall-clock latency of one forward pass on a single image, in milliseconds. */
  latencyBatch1Ms: number;
  /** Training throughput at `batch`, images per second (full step: augmentation through AdamW). */
  trainImagesPerSecond: number;
  /** Wall-clock time of one training step at `batch`, in milliseconds. */
  trainStepMs: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** A data set of random pixels with the model's input shape (for timing only). */
function randomDataset(
  c: { inChannels: number; imgHeight: number; imgWidth: number; numClasses: number },
  n: number,
): Dataset {
  const pixels = c.inChannels * c.imgHeight * c.imgWidth;
  const images = new Uint8Array(n * pixels);
  let s = 1;
  for (let i = 0; i < images.length; i++) images[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
  const labels = Int32Array.from({ length: n }, (_, i) => i % c.numClasses);
  const split = { length: n, images, labels };
  return {
    name: "random",
    channels: c.inChannels,
    height: c.imgHeight,
    width: c.imgWidth,
    classes: Array.from({ length: c.numClasses }, (_, i) => String(i)),
    mean: new Array(c.inChannels).fill(0.5),
    std: new Array(c.inChannels).fill(0.25),
    train: split,
    test: { length: 0, images: new Uint8Array(0), labels: new Int32Array(0) },
  };
}

/**
 * Times inference and training of a registered model on random data of its input shape.
 *
 * Each figure is the median of `repeats` timed runs after one warm-up run (which compiles the pipelines and
 * allocates buffers); training times `trainSteps` consecutive steps per run. Remaining options are
 * {@link ModelOptions} passed to {@link CompactTransformer.create}.
 *
 * @param name Registered model name (one of `modelNames()`).
 * @param options `batch` (default 128), `repeats` (default 5), `trainSteps` (default 5; 0 skips training) and
 *   model options.
 * @returns The medians, rounded for display.
 *
 * @example Compare inference and training throughput
 * ```ts
 * import { benchmarkModel } from "@compact-transformers/cct";
 *
 * const r = await benchmarkModel("cct_2_3x2_32", { batch: 64, repeats: 3 });
 * console.log(`${r.model} on ${r.adapter}: ${r.inferenceImagesPerSecond} img/s inference, ` +
 *   `${r.trainImagesPerSecond} img/s training, ${r.latencyBatch1Ms} ms batch-1 latency`);
 * ```
 */
export async function benchmarkModel(
  name: string,
  { batch = 128, repeats = 5, trainSteps = 5, ...options }: ModelOptions & {
    batch?: number;
    repeats?: number;
    trainSteps?: number;
  } = {},
): Promise<ModelBenchmark> {
  for (const k of Object.keys(options) as (keyof ModelOptions)[]) {
    if (options[k] === undefined) delete options[k];
  }
  const model = await CompactTransformer.create(name, options);
  const c = model.config;
  const shape = (n: number) => [n, c.inChannels, c.imgHeight, c.imgWidth] as [number, number, number, number];
  const input = new Float32Array(batch * c.inChannels * c.imgHeight * c.imgWidth).map((_, i) => Math.sin(i));
  await model.forward(input, shape(batch)); // compile and allocate
  const batchTimes: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    await model.forward(input, shape(batch));
    batchTimes.push(performance.now() - t0);
  }
  const one = input.subarray(0, c.inChannels * c.imgHeight * c.imgWidth);
  await model.forward(one, shape(1));
  const latencies: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    await model.forward(one, shape(1));
    latencies.push(performance.now() - t0);
  }
  let stepMs = NaN;
  if (trainSteps > 0) {
    const trainer = new Trainer(model, randomDataset(c, batch * (trainSteps + 2)), {
      batchSize: batch,
      epochs: 1,
    });
    stepMs = await trainer.timeSteps(trainSteps, repeats);
    trainer.destroy();
  }
  model.destroy();
  return {
    model: name,
    adapter: model.gpu.description,
    input: `${c.inChannels}×${c.imgHeight}×${c.imgWidth}`,
    batch,
    inferenceImagesPerSecond: Math.round(batch / (median(batchTimes) / 1000)),
    latencyBatch1Ms: +median(latencies).toFixed(2),
    trainImagesPerSecond: trainSteps > 0 ? Math.round(batch / (stepMs / 1000)) : NaN,
    trainStepMs: trainSteps > 0 ? +stepMs.toFixed(1) : NaN,
  };
}
