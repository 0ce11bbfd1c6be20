/**
 * Training on the GPU, the paper's recipe (SPEC §4): one submission per step (upload the batch, augment, forward,
 * loss, backward, AdamW), metrics accumulated on the GPU and read back only every `logEvery` steps, checkpoints
 * written atomically, resumable to the same loss curve.
 */
import type { Gpu } from "../gpu/device.ts";
import { Plan, UniformBlock } from "../gpu/plan.ts";
import { deriveSeed } from "../gpu/random.ts";
import { createTensor, readTensor, type Tensor, writeTensor } from "../gpu/tensor.ts";
import {
  AUGMENT_PARAM_WORDS,
  augmentImages,
  MIX_PARAM_WORDS,
  mixBatch,
  pixelWords,
  type RandAugmentOptions,
  sampleMix,
  writeMixParams,
} from "../kernels/augment.ts";
import { accumulateMetrics, crossEntropyForwardBackward, METRICS, METRICS_SIZE } from "../kernels/loss.ts";
import {
  adamwUpdate,
  clipScale,
  createAdamwHyper,
  emaUpdate,
  gradNormPartialCount,
  gradNormSquared,
  setAdamwHyper,
  setEmaDecay,
  zero,
} from "../kernels/optimizer.ts";
import { batchCount, batches, type Dataset, type Split } from "../data/dataset.ts";
import { Activations, recordBackward } from "../models/network.ts";
import { type CompactTransformer, orderedForArena } from "../models/model.ts";
import { learningRate, type ScheduleOptions } from "./schedule.ts";
import { type TestTimeAugmentation, ttaLogits, ttaViews } from "./tta.ts";

/** Every knob of a training run; {@link defaultTrainOptions} fills what is not given. */
export interface TrainOptions extends ScheduleOptions {
  /** Images per optimizer step (default 128); the last partial batch of an epoch is dropped. */
  batchSize: number;
  /** AdamW decoupled weight decay (default 0.05), applied to ≥ 2-D weights only. */
  weightDecay: number;
  /** Label smoothing ε. */
  smoothing: number;
  /** Mixup α (0 disables). */
  mixup: number;
  /** CutMix α (0 disables). */
  cutmix: number;
  /** Probability of CutMix when both are enabled. */
  mixupSwitchProb: number;
  /** Random-erasing probability. */
  reprob: number;
  /** Random crop padding in pixels (0 disables); ignored when `resizedCropScale` is set. */
  cropPadding: number;
  /** Random resized crop scale range (the paper's 0.8–1), or undefined for padded crops. */
  resizedCropScale?: [number, number];
  /** Random horizontal flip. */
  flip: boolean;
  /** RandAugment policy in timm's notation (`rand-m9-mstd0.5-inc1`), or "" for none. */
  randAugment: string;
  /** Clip the global gradient norm to this value (0 disables). */
  clipGrad: number;
  /** Run seed (default 0): shuffling, augmentation, dropout and mixing all derive from it and the step. */
  seed: number;
  /** Read metrics back every this many steps (each read waits for the GPU, ≥ 11 ms on llvmpipe). */
  logEvery: number;
  /**
   * Evaluate the test split after every this many epochs, and always after the last (0: only after the last);
   * as Keras's `validation_freq`. Evaluation takes about a tenth of an epoch of Fashion-MNIST here.
   */
  evalEvery: number;
  /**
   * Views averaged when the test split is evaluated (default "none"): "flip" adds the mirror image, "flip-shift"
   * also four one-pixel shifts. Only for data sets trained with flips.
   */
  tta: TestTimeAugmentation;
  /**
   * Decay per optimizer step of a moving average of the weights (timm's `--model-ema-decay`, e.g. 0.9998: a
   * horizon of about 1 / (1 − decay) = 5,000 steps); 0 (default) keeps none. The average is evaluated beside
   * the weights. As timm's `ModelEmaV3`, the first update copies the weights; see {@link modelEmaDecayAt}.
   */
  modelEmaDecay: number;
  /**
   * Warm the average's decay up (timm's `--model-ema-warmup`): 1 − (1 + t)^(−2/3) at update t + 1, capped at
   * `modelEmaDecay`, so early averages forget the initial weights quickly (0.999 after 31,600 updates).
   */
  modelEmaWarmup: boolean;
}

/**
 * The decay of the weights' moving average at its `update`-th update (1-based, the optimizer step just taken),
 * as timm's `ModelEmaV3.get_decay`: 0 at the first (the average takes the weights), then `modelEmaDecay`, or
 * with `modelEmaWarmup` 1 − (1 + t)^(−2/3) for t = update − 1, capped at `modelEmaDecay`.
 *
 * @param o The run's `modelEmaDecay` and `modelEmaWarmup`.
 * @param update Updates so far, including this one.
 * @returns The decay in [0, modelEmaDecay].
 *
 * @example How fast the warmed-up average forgets, for timm's default decay
 * ```ts
 * import { modelEmaDecayAt } from "@compact-transformers/cct";
 *
 * const o = { modelEmaDecay: 0.9998, modelEmaWarmup: true };
 * for (const step of [1, 100, 10_000, 1_000_000]) console.log(step, modelEmaDecayAt(o, step));
 * // 1 0, 100 ≈ 0.954, 10,000 ≈ 0.9978, 1,000,000 0.9998 (the cap)
 * ```
 */
export function modelEmaDecayAt(
  o: Pick<TrainOptions, "modelEmaDecay" | "modelEmaWarmup">,
  update: number,
): number {
  const t = update - 1;
  if (t <= 0) return 0;
  return o.modelEmaWarmup ? Math.max(0, Math.min(1 - (1 + t) ** (-2 / 3), o.modelEmaDecay)) : o.modelEmaDecay;
}

/**
 * The recipe's defaults scaled for small images and short runs: 10 epochs of batch 128, AdamW at lr 1e-3 with
 * one warm-up epoch and cosine decay to 1e-5, weight decay 0.05, label smoothing 0.1, 2-pixel padded crops and
 * flips; no mixup, CutMix, random erasing, RandAugment or clipping.
 *
 * @param overrides Options that replace the defaults.
 * @returns A complete set of options.
 */
export function defaultTrainOptions(overrides: Partial<TrainOptions> = {}): TrainOptions {
  return {
    epochs: 10,
    batchSize: 128,
    lr: 1e-3,
    minLr: 1e-5,
    warmupEpochs: 1,
    warmupLr: 1e-5,
    cooldownEpochs: 0,
    weightDecay: 0.05,
    smoothing: 0.1,
    mixup: 0,
    cutmix: 0,
    mixupSwitchProb: 0.5,
    reprob: 0,
    cropPadding: 2,
    resizedCropScale: undefined,
    flip: true,
    randAugment: "",
    clipGrad: 0,
    seed: 0,
    logEvery: 20,
    evalEvery: 1,
    tta: "none",
    modelEmaDecay: 0,
    modelEmaWarmup: false,
    ...overrides,
  };
}

/** What the progress callback receives every `logEvery` steps. */
export interface ProgressMetrics {
  /** Current epoch, 1-based. */
  epoch: number;
  /** Step within the epoch (1-based). */
  step: number;
  /** Optimizer steps per epoch. */
  steps: number;
  /** Optimizer steps since the start of the run. */
  globalStep: number;
  /** Mean training loss and accuracy since the last report. */
  loss: number;
  /** Fraction of training images (augmented) whose top-1 prediction was right since the last report. */
  accuracy: number;
  /** Learning rate of the latest step. */
  lr: number;
  /** Training throughput since the last report. */
  imagesPerSecond: number;
  /** Seconds left in the run at the current speed. */
  etaSeconds: number;
}

/** Evaluation of a split. */
export interface EvalResult {
  /** Mean cross-entropy (no label smoothing). */
  loss: number;
  /** Fraction of images whose highest logit is the true class, in [0, 1]. */
  top1: number;
  /** Fraction of images whose true class is among the five highest logits, in [0, 1]. */
  top5: number;
  /** confusion[true][predicted] counts. */
  confusion: number[][];
  /** Number of images evaluated. */
  count: number;
}

/** One epoch's summary. */
export interface EpochSummary {
  /** Epochs completed, including this one (1-based). */
  epoch: number;
  /** Mean training loss over the epoch (on augmented, smoothed targets). */
  trainLoss: number;
  /** Training top-1 accuracy over the epoch, in [0, 1]. */
  trainAccuracy: number;
  /** Evaluation of the test split after the epoch; absent for epochs that `evalEvery` skips. */
  test?: EvalResult;
  /** The same evaluation of the weights' moving average, when the run keeps one (`modelEmaDecay` > 0). */
  testEma?: EvalResult;
  /** Learning rate of the epoch's last step. */
  lr: number;
  /** Wall-clock seconds of the training part (evaluation excluded). */
  seconds: number;
  /** Training throughput over the epoch. */
  imagesPerSecond: number;
}

/** Hooks for progress display, logging and checkpointing. */
export interface TrainCallbacks {
  /** Called every `logEvery` steps and at the end of each epoch, after metrics are read back. */
  onProgress?(m: ProgressMetrics): void;
  /** Called after each epoch (and its evaluation, if any); may await (e.g. write a checkpoint). */
  onEpoch?(summary: EpochSummary, trainer: Trainer): void | Promise<void>;
}

/** Where a run stands; saved in checkpoints so `resume` continues the same run. */
export interface TrainState {
  /** Epochs completed. */
  epoch: number;
  /** Optimizer steps taken. */
  globalStep: number;
  /** Best test top-1 accuracy after any evaluated epoch so far, of the weights or of their moving average. */
  bestTop1: number;
}

/** Raised when the loss becomes NaN or infinite; the trainer stops without saving anything further. */
export class NonFiniteLossError extends Error {
  /**
   * Records where the run diverged; the message names the loss, epoch and step.
   *
   * @param epoch Epoch (0-based) in which the loss diverged.
   * @param globalStep Optimizer steps taken when the loss was read.
   * @param loss The non-finite value.
   */
  constructor(readonly epoch: number, readonly globalStep: number, loss: number) {
    super(
      `loss became ${loss} at epoch ${epoch}, step ${globalStep}: stopping (the last good checkpoint is kept)`,
    );
    this.name = "NonFiniteLossError";
  }
}

/** Seed-block words of the augmentation (after the model's own sites). */
const AUGMENT_SEED_WORDS = 2;

/** The recorded training step for one batch size: its buffers and its plan. */
class StepProgram {
  readonly pixels: Tensor;
  readonly labels: Tensor;
  readonly targets: Tensor | undefined;
  readonly losses: Tensor;
  readonly metrics: Tensor;
  readonly acts: Activations;
  readonly plan: Plan;
  readonly mixParams: UniformBlock | undefined;
  readonly augmentSeeds: UniformBlock;
  /** 1 − the moving average's decay for this step, when the run keeps one. */
  readonly emaRate: UniformBlock | undefined;
  /** Pipelines and bind groups checked (once, before the first submission). */
  validated = false;
  /** Every buffer this program created, freed by destroy(). */
  #buffers: GPUBuffer[] = [];
  #gpu: Gpu | undefined;
  #staging: GPUBuffer | undefined;

  constructor(model: CompactTransformer, data: Dataset, o: TrainOptions, hyper: UniformBlock, state: {
    m: Tensor;
    v: Tensor;
    ema: Tensor | undefined;
  }) {
    const gpu = this.#gpu = model.gpu, c = model.config, B = o.batchSize;
    const pixelCount = B * c.inChannels * c.imgHeight * c.imgWidth;
    this.pixels = this.#tensor([pixelWords(pixelCount)], "batch pixels (u8×4)");
    const augmentParams = this.#tensor([B, AUGMENT_PARAM_WORDS], "augment params");
    let randAugment: RandAugmentOptions | undefined;
    if (o.randAugment) {
      const image = [B, c.inChannels, c.imgHeight, c.imgWidth];
      randAugment = {
        ...parseRandAugment(o.randAugment),
        scratch: [this.#tensor(image, "randaugment a"), this.#tensor(image, "randaugment b")],
        lut: this.#tensor([B, c.inChannels, 256], "randaugment lut"),
      };
    }
    this.labels = this.#tensor([B], "batch labels");
    this.losses = this.#tensor([B], "batch losses");
    this.metrics = this.#tensor([METRICS_SIZE], "train metrics");
    this.acts = new Activations(gpu, c, B, true);
    this.augmentSeeds = this.#uniform(AUGMENT_SEED_WORDS, "augment seeds");
    const mixing = o.mixup > 0 || o.cutmix > 0;
    this.targets = mixing ? this.#tensor([B, c.numClasses], "soft targets") : undefined;
    this.mixParams = mixing ? this.#uniform(MIX_PARAM_WORDS, "mix params") : undefined;
    const plan = this.plan = new Plan(gpu, `${c.name} train step b${B}`);
    const input = this.acts.get("input");

    augmentImages(plan, input, this.pixels, augmentParams, {
      batch: B,
      channels: c.inChannels,
      height: c.imgHeight,
      width: c.imgWidth,
      mean: data.mean,
      std: data.std,
      pad: o.resizedCropScale ? 0 : o.cropPadding,
      resizedCrop: o.resizedCropScale
        ? { scaleMin: o.resizedCropScale[0], scaleMax: o.resizedCropScale[1] }
        : undefined,
      flip: o.flip,
      reprob: o.reprob,
      randAugment,
      seed: { block: this.augmentSeeds, word: 0 },
    });
    if (this.targets) {
      mixBatch(plan, input, this.targets, this.labels, this.mixParams!, {
        batch: B,
        channels: c.inChannels,
        height: c.imgHeight,
        width: c.imgWidth,
        classes: c.numClasses,
        smoothing: o.smoothing,
      });
    }
    const ctx = model.recordTrainingPass(plan, this.acts, true);
    crossEntropyForwardBackward(
      plan,
      this.losses,
      this.acts.get("dlogits"),
      this.acts.get("logits"),
      this.targets ?? this.labels,
      // Soft targets already carry the smoothing (timm folds it into the mixup targets).
      { batch: B, classes: c.numClasses, smoothing: this.targets ? 0 : o.smoothing, soft: !!this.targets },
    );
    accumulateMetrics(plan, this.metrics, this.losses, this.acts.get("logits"), this.targets ?? this.labels, {
      batch: B,
      classes: c.numClasses,
      soft: !!this.targets,
    });
    const grads = model.gradients;
    zero(plan, grads.whole());
    recordBackward(plan, ctx, grads);

    let gradScale: Tensor | undefined;
    if (o.clipGrad > 0) {
      const norm = this.#tensor([1], "grad norm²");
      const partials = this.#tensor([gradNormPartialCount(grads.whole().size)], "grad norm partials");
      gradScale = this.#tensor([1], "clip scale");
      gradNormSquared(plan, norm, grads.whole(), partials);
      clipScale(plan, gradScale, norm, { maxNorm: o.clipGrad });
    }
    // Two contiguous ranges of the parameter arena: decayed weights, then biases / norms / embeddings.
    const { decayed, plain } = optimizerRanges(model);
    const params = model.params.whole(), g = grads.whole();
    const paramsForGrads = params.prefix([g.size]);
    if (decayed.length > 0) {
      adamwUpdate(plan, paramsForGrads, g, state.m, state.v, hyper, {
        ...decayed,
        decay: true,
        gradScale,
      });
    }
    if (plain.length > 0) {
      adamwUpdate(plan, paramsForGrads, g, state.m, state.v, hyper, {
        ...plain,
        decay: false,
        gradScale,
      });
    }
    this.emaRate = state.ema ? this.#uniform(1, "ema rate") : undefined;
    if (state.ema) emaUpdate(plan, state.ema, params, { decay: this.emaRate! });
  }

  /**
   * Reads the accumulated metrics and zeroes them, in one small submission ordered after the queued steps
   * (the only wait of the training loop; a persistent staging buffer, nothing allocated).
   */
  async takeMetrics(): Promise<Float32Array> {
    const device = this.#gpu!.device;
    this.#staging ??= device.createBuffer({
      label: "train metrics:readback",
      size: this.metrics.byteLength,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = device.createCommandEncoder({ label: "take metrics" });
    encoder.copyBufferToBuffer(
      this.metrics.buffer,
      this.metrics.offset,
      this.#staging,
      0,
      this.metrics.byteLength,
    );
    encoder.clearBuffer(this.metrics.buffer, this.metrics.offset, Math.ceil(this.metrics.byteLength / 4) * 4);
    device.queue.submit([encoder.finish()]);
    await this.#staging.mapAsync(GPUMapMode.READ);
    const values = new Float32Array(this.#staging.getMappedRange().slice(0));
    this.#staging.unmap();
    return values;
  }

  #tensor(shape: number[], label: string): Tensor {
    const t = createTensor(this.#gpu!, shape, label);
    this.#buffers.push(t.buffer);
    return t;
  }

  #uniform(words: number, label: string): UniformBlock {
    const block = new UniformBlock(this.#gpu!, words, label);
    this.#buffers.push(block.buffer);
    return block;
  }

  destroy(): void {
    for (const b of this.#buffers) b.destroy();
    this.#staging?.destroy();
    this.acts.destroy();
    this.plan.destroy();
  }
}

/**
 * Parses timm's RandAugment notation `rand-m9-mstd0.5-inc1` (m: magnitude, mstd: its std, inc1: the increasing op
 * set, which is the only one implemented).
 */
export function parseRandAugment(policy: string): { magnitude: number; magnitudeStd: number } {
  const parts = policy.split("-");
  if (parts[0] !== "rand") {
    throw new RangeError(`RandAugment policy "${policy}": expected rand-m<M>[-mstd<S>][-inc1]`);
  }
  let magnitude = 9, magnitudeStd = 0;
  for (const part of parts.slice(1)) {
    const m = /^(mstd|m|inc|n)([\d.]+)$/.exec(part);
    if (!m) throw new RangeError(`RandAugment policy "${policy}": unknown part "${part}"`);
    const value = Number(m[2]);
    if (m[1] === "m") magnitude = value;
    else if (m[1] === "mstd") magnitudeStd = value;
    else if (m[1] === "inc" && value !== 1) {
      throw new RangeError(`RandAugment policy "${policy}": only inc1 is supported`);
    } else if (m[1] === "n" && value !== 2) {
      throw new RangeError(`RandAugment policy "${policy}": only 2 layers are supported`);
    }
  }
  return { magnitude, magnitudeStd };
}

/** Element ranges of the decayed and non-decayed trainables, in the (shared) parameter/gradient layout. */
export function optimizerRanges(model: CompactTransformer): {
  decayed: { offset: number; length: number };
  plain: { offset: number; length: number };
} {
  const trainables = orderedForArena(model.specs).filter((s) => s.trainable);
  const grads = model.gradients;
  let decayEnd = 0;
  for (const s of trainables) {
    const t = grads.get(s.name);
    if (s.decay) decayEnd = t.offset / 4 + t.size;
  }
  const last = grads.get(trainables[trainables.length - 1].name);
  const end = last.offset / 4 + last.size;
  const firstPlain = trainables.find((s) => !s.decay);
  const plainStart = firstPlain ? grads.get(firstPlain.name).offset / 4 : end;
  return {
    decayed: { offset: 0, length: decayEnd },
    plain: { offset: plainStart, length: end - plainStart },
  };
}

/**
 * Trains a model on a data set. One instance per run; `run()` goes through the remaining epochs.
 *
 * Each optimizer step is one GPU submission: upload the batch, augment, forward, loss, backward, AdamW.
 * Metrics are read back every `logEvery` steps; the test split is evaluated after every `evalEvery` epochs
 * and after the last.
 *
 * @example Train CCT-2/3x2 on the embedded data set and keep the best weights
 * ```ts
 * import { CompactTransformer, loadDataset, Trainer } from "@compact-transformers/cct";
 *
 * const data = await loadDataset("synthetic:gray28");
 * const model = await CompactTransformer.create("cct_2_3x2_32", { imgSize: 28, inChannels: 1 });
 * const trainer = new Trainer(model, data, { epochs: 5, batchSize: 64 }, {
 *   onProgress: (m) => console.log(`${m.epoch}:${m.step}/${m.steps} loss ${m.loss.toFixed(3)}`),
 *   onEpoch: async (s, t) => {
 *     if (!s.test) return;
 *     console.log(`epoch ${s.epoch}: test top-1 ${(100 * s.test.top1).toFixed(1)}%`);
 *     if (s.test.top1 >= t.state.bestTop1) await Deno.writeFile("best.safetensors", await model.saveWeights());
 *   },
 * });
 * await trainer.run();
 * trainer.destroy();
 * ```
 */
export class Trainer {
  /** The run's complete options (the defaults filled in). */
  readonly options: TrainOptions;
  /** Progress of the run; set it, with {@link Trainer.setMoments}, to resume from a checkpoint. */
  state: TrainState = { epoch: 0, globalStep: 0, bestTop1: 0 };
  /** AdamW first moments, laid out like the model's gradient arena. */
  readonly m: Tensor;
  /** AdamW second moments, laid out like the model's gradient arena. */
  readonly v: Tensor;
  /** AdamW hyper-parameters of the current step (learning rate, betas, ε, weight decay, step). */
  readonly hyper: UniformBlock;
  /** The moving average of the weights, laid out like the model's parameter arena; absent when not kept. */
  readonly ema: Tensor | undefined;
  /** Whether `ema` holds an average yet (it starts as the weights before the run's first step, or a checkpoint's). */
  #emaStarted = false;
  /** The weights while the average stands in for them (see {@link Trainer.withEmaWeights}). */
  #backup: Tensor | undefined;
  /** Whether the average stands in for the weights now. */
  #swapped = false;
  #program: StepProgram | undefined;

  /**
   * Prepares a run: checks that the data fit the model and allocates the optimizer state. The training step
   * itself is recorded on the first epoch.
   *
   * @param model The model to train, in place.
   * @param data Training and test splits; geometry and class count must match the model.
   * @param options Overrides of {@link defaultTrainOptions}.
   * @param callbacks Progress and per-epoch hooks.
   * @throws {TypeError} If the images' shape or the class count differs from the model's.
   * @throws {RangeError} If `batchSize` is not in 1..(training images), `evalEvery` is not a whole number ≥ 0 or
   *   `modelEmaDecay` is not in [0, 1).
   */
  constructor(
    readonly model: CompactTransformer,
    readonly data: Dataset,
    options: Partial<TrainOptions> = {},
    readonly callbacks: TrainCallbacks = {},
  ) {
    this.options = defaultTrainOptions(options);
    const o = this.options, c = model.config;
    if (data.channels !== c.inChannels || data.height !== c.imgHeight || data.width !== c.imgWidth) {
      throw new TypeError(
        `data set ${data.name} has ${data.channels}×${data.height}×${data.width} images, model ${c.name} expects ` +
          `${c.inChannels}×${c.imgHeight}×${c.imgWidth}`,
      );
    }
    if (data.classes.length !== c.numClasses) {
      throw new TypeError(
        `data set ${data.name} has ${data.classes.length} classes, model ${c.name} ${c.numClasses}`,
      );
    }
    if (!(Number.isInteger(o.evalEvery) && o.evalEvery >= 0)) {
      throw new RangeError(
        `evalEvery ${o.evalEvery} must be a whole number of epochs (0: only after the last)`,
      );
    }
    if (!(o.modelEmaDecay >= 0 && o.modelEmaDecay < 1)) {
      throw new RangeError(`modelEmaDecay ${o.modelEmaDecay} must be in [0, 1) (0: no moving average)`);
    }
    ttaViews(o.tta); // a clear error now rather than after the first epoch
    if (!(o.batchSize >= 1 && o.batchSize <= data.train.length)) {
      throw new RangeError(`batch size ${o.batchSize} must be in 1..${data.train.length} (the training set)`);
    }
    const size = model.gradients.whole().size;
    this.m = createTensor(model.gpu, [size], "adamw m");
    this.v = createTensor(model.gpu, [size], "adamw v");
    this.hyper = createAdamwHyper(model.gpu);
    if (o.modelEmaDecay > 0) this.ema = createTensor(model.gpu, [model.params.whole().size], "weights ema");
  }

  /** Epochs of the whole run: the cosine's `epochs` plus `cooldownEpochs` (as timm's training script). */
  get totalEpochs(): number {
    return this.options.epochs + this.options.cooldownEpochs;
  }

  /** Optimizer steps per epoch (the last partial batch is dropped, as timm does for training). */
  get stepsPerEpoch(): number {
    return batchCount(this.data.train.length, this.options.batchSize, true);
  }

  /** The learning rate at optimizer step `globalStep`. */
  lrAt(globalStep: number): number {
    return learningRate(this.options, globalStep / this.stepsPerEpoch);
  }

  #stepProgram(): StepProgram {
    this.#program ??= new StepProgram(this.model, this.data, this.options, this.hyper, {
      m: this.m,
      v: this.v,
      ema: this.ema,
    });
    return this.#program;
  }

  /** Trains the remaining epochs; returns the last epoch's summary. */
  async run(): Promise<EpochSummary | undefined> {
    let last: EpochSummary | undefined;
    while (this.state.epoch < this.totalEpochs) last = await this.trainEpoch();
    return last;
  }

  /** One epoch of training followed, as `evalEvery` says, by evaluation on the test split. */
  async trainEpoch(): Promise<EpochSummary> {
    const o = this.options, model = this.model, gpu = model.gpu;
    const p = this.#stepProgram();
    this.#startEma();
    const epoch = this.state.epoch;
    const steps = this.stepsPerEpoch;
    const t0 = performance.now();
    let windowStart = t0, windowImages = 0;
    let epochLoss = 0, epochCorrect = 0, epochCount = 0;
    let lr = this.lrAt(this.state.globalStep);
    writeTensor(gpu, p.metrics, new Float32Array(METRICS_SIZE));
    let step = 0;
    const readMetrics = async (): Promise<void> => {
      const m = await p.takeMetrics();
      const loss = m[METRICS.lossSum] / m[METRICS.count];
      if (!Number.isFinite(loss)) throw new NonFiniteLossError(epoch, this.state.globalStep, loss);
      epochLoss += m[METRICS.lossSum];
      epochCorrect += m[METRICS.correct];
      epochCount += m[METRICS.count];
      const now = performance.now();
      const ips = windowImages / ((now - windowStart) / 1000);
      const remaining = (this.totalEpochs - epoch) * steps - step;
      this.callbacks.onProgress?.({
        epoch: epoch + 1,
        step,
        steps,
        globalStep: this.state.globalStep,
        loss,
        accuracy: m[METRICS.correct] / m[METRICS.count],
        lr,
        imagesPerSecond: ips,
        etaSeconds: (remaining * o.batchSize) / Math.max(ips, 1e-9),
      });
      windowStart = now;
      windowImages = 0;
    };
    for (
      const batch of batches(this.data.train, o.batchSize, {
        shuffle: true,
        seed: o.seed,
        epoch,
        dropLast: true,
      })
    ) {
      // Queue writes are ordered before the next submission, so this overlaps the GPU's previous step.
      gpu.device.queue.writeBuffer(p.pixels.buffer, 0, padTo4(batch.images));
      writeTensor(gpu, p.labels, batch.labels);
      const globalStep = this.state.globalStep;
      lr = this.lrAt(globalStep);
      setAdamwHyper(this.hyper, lr, 0.9, 0.999, 1e-8, o.weightDecay, globalStep + 1);
      model.setStepSeeds(o.seed, globalStep);
      p.augmentSeeds.u32[0] = deriveSeed(o.seed, globalStep, 0x41554731);
      p.augmentSeeds.u32[1] = deriveSeed(o.seed, globalStep, 0x41554732);
      p.augmentSeeds.flush();
      if (p.emaRate) setEmaDecay(p.emaRate, modelEmaDecayAt(o, globalStep + 1));
      if (p.mixParams) {
        writeMixParams(
          p.mixParams,
          sampleMix(o.seed, globalStep, {
            mixupAlpha: o.mixup,
            cutmixAlpha: o.cutmix,
            switchProb: o.mixupSwitchProb,
            height: model.config.imgHeight,
            width: model.config.imgWidth,
          }),
        );
      }
      if (!p.validated) {
        await p.plan.ready(); // pipeline and bind-group errors, named, before the first submission
        p.validated = true;
      }
      p.plan.submit();
      this.state.globalStep++;
      step++;
      windowImages += batch.count;
      if (step % o.logEvery === 0 || step === steps) await readMetrics();
    }
    const seconds = (performance.now() - t0) / 1000;
    const every = o.evalEvery;
    const evaluated = epoch + 1 >= this.totalEpochs || (every > 0 && (epoch + 1) % every === 0);
    const test = evaluated ? await this.evaluate(this.data.test) : undefined;
    const testEma = evaluated && this.ema
      ? await this.withEmaWeights(() => this.evaluate(this.data.test))
      : undefined;
    // The training loss was read before the epoch's last update: a non-finite model shows up here first. An
    // epoch without evaluation checks one training batch instead, so onEpoch never saves a diverged model.
    const check = test ?? await this.evaluate(firstImages(this.data.train, o.batchSize));
    if (!Number.isFinite(check.loss)) throw new NonFiniteLossError(epoch, this.state.globalStep, check.loss);
    this.state.epoch++;
    for (const scored of [test, testEma]) {
      if (scored && scored.count > 0) this.state.bestTop1 = Math.max(this.state.bestTop1, scored.top1);
    }
    const summary: EpochSummary = {
      epoch: this.state.epoch,
      trainLoss: epochLoss / Math.max(1, epochCount),
      trainAccuracy: epochCorrect / Math.max(1, epochCount),
      ...(test ? { test } : {}),
      ...(testEma ? { testEma } : {}),
      lr,
      seconds,
      imagesPerSecond: (steps * o.batchSize) / seconds,
    };
    await this.callbacks.onEpoch?.(summary, this);
    return summary;
  }

  /**
   * Median milliseconds per training step, for benchmarks: `samples` times, `steps` full steps on the first
   * batch submitted back to back and awaited once (the way `run` pipelines them). Leaves the model trained.
   */
  async timeSteps(steps: number, samples = 3): Promise<number> {
    const p = this.#stepProgram();
    const gpu = this.model.gpu;
    const batch =
      batches(this.data.train, this.options.batchSize, { shuffle: false, dropLast: true }).next().value;
    if (!batch) throw new RangeError("timeSteps: the training split holds less than one batch");
    gpu.device.queue.writeBuffer(p.pixels.buffer, 0, padTo4(batch.images));
    writeTensor(gpu, p.labels, batch.labels);
    setAdamwHyper(this.hyper, this.options.lr, 0.9, 0.999, 1e-8, this.options.weightDecay, 1);
    this.model.setStepSeeds(this.options.seed, 0);
    if (p.emaRate) setEmaDecay(p.emaRate, this.options.modelEmaDecay);
    this.#startEma();
    await p.plan.run(); // compile
    const times: number[] = [];
    for (let s = 0; s < samples; s++) {
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) p.plan.submit();
      await gpu.device.queue.onSubmittedWorkDone();
      times.push((performance.now() - t0) / steps);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  }

  /** Loss, top-1, top-5 and confusion matrix of the model on a split (evaluation mode, `tta`'s views). */
  evaluate(split: Split): Promise<EvalResult> {
    return evaluate(this.model, this.data, split, this.options.batchSize, { tta: this.options.tta });
  }

  /** The AdamW moments by parameter name (for checkpoints). */
  async moments(): Promise<{ m: Map<string, Float32Array>; v: Map<string, Float32Array> }> {
    const all = { m: await readTensor(this.model.gpu, this.m), v: await readTensor(this.model.gpu, this.v) };
    const out = { m: new Map<string, Float32Array>(), v: new Map<string, Float32Array>() };
    for (const s of this.model.specs) {
      if (!s.trainable) continue;
      const t = this.model.gradients.get(s.name);
      out.m.set(s.name, all.m.slice(t.offset / 4, t.offset / 4 + t.size));
      out.v.set(s.name, all.v.slice(t.offset / 4, t.offset / 4 + t.size));
    }
    return out;
  }

  /** Restores AdamW moments saved by {@link moments}. */
  setMoments(m: Map<string, Float32Array>, v: Map<string, Float32Array>): void {
    const size = this.m.size;
    const hostM = new Float32Array(size), hostV = new Float32Array(size);
    for (const s of this.model.specs) {
      if (!s.trainable) continue;
      const t = this.model.gradients.get(s.name);
      const mm = m.get(s.name), vv = v.get(s.name);
      if (!mm || !vv || mm.length !== t.size || vv.length !== t.size) {
        throw new TypeError(`optimizer state: moments of ${s.name} are missing or mis-sized`);
      }
      hostM.set(mm, t.offset / 4);
      hostV.set(vv, t.offset / 4);
    }
    writeTensor(this.model.gpu, this.m, hostM);
    writeTensor(this.model.gpu, this.v, hostV);
  }

  /** Starts the moving average at the present weights, unless it holds one already. */
  #startEma(): void {
    if (!this.ema || this.#emaStarted) return;
    copyTensor(this.model.gpu, this.model.params.whole(), this.ema);
    this.#emaStarted = true;
  }

  /**
   * Runs `fn` with the moving average of the weights in the model's place (the model's own `forward`,
   * `evaluate` and `saveWeights` then use it) and puts the weights back after, also when `fn` throws.
   *
   * @param fn Work to do with the averaged weights, e.g. an evaluation or a save.
   * @returns What `fn` returns.
   * @throws {Error} If the run keeps no moving average (`modelEmaDecay` is 0).
   *
   * @example Save the averaged weights beside the trained ones
   * ```ts
   * import { CompactTransformer, loadDataset, Trainer } from "@compact-transformers/cct";
   *
   * const data = await loadDataset("synthetic:gray28");
   * const model = await CompactTransformer.create("cct_2_3x2_32", { imgSize: 28, inChannels: 1 });
   * const trainer = new Trainer(model, data, { epochs: 3, batchSize: 64, modelEmaDecay: 0.999 });
   * const last = await trainer.run();
   * console.log(`test top-1 ${last?.test?.top1}, of the average ${last?.testEma?.top1}`);
   * await Deno.writeFile("ema.safetensors", await trainer.withEmaWeights(() => model.saveWeights()));
   * ```
   */
  async withEmaWeights<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.ema) throw new Error("this run keeps no moving average of the weights (modelEmaDecay is 0)");
    // Before the first step the average would be the weights; inside another call the average is in place.
    if (!this.#emaStarted || this.#swapped) return await fn();
    const gpu = this.model.gpu, params = this.model.params.whole();
    this.#backup ??= createTensor(gpu, [params.size], "weights while the ema stands in");
    copyTensor(gpu, params, this.#backup);
    copyTensor(gpu, this.ema, params);
    this.#swapped = true;
    try {
      return await fn();
    } finally {
      copyTensor(gpu, this.#backup, params);
      this.#swapped = false;
    }
  }

  /** The moving average of the weights by parameter name (for checkpoints); undefined when the run keeps none. */
  async emaWeights(): Promise<Map<string, Float32Array> | undefined> {
    if (!this.ema) return undefined;
    if (!this.#emaStarted) return await this.model.getWeights(); // what the average would start from
    const all = await readTensor(this.model.gpu, this.ema);
    const out = new Map<string, Float32Array>();
    for (const s of this.model.specs) {
      const t = this.model.params.get(s.name);
      out.set(s.name, all.slice(t.offset / 4, t.offset / 4 + t.size));
    }
    return out;
  }

  /**
   * Restores a moving average saved by {@link emaWeights}.
   *
   * @throws {Error} If the run keeps no moving average.
   * @throws {TypeError} If a parameter is missing or has another size.
   */
  setEmaWeights(weights: Map<string, Float32Array>): void {
    if (!this.ema) throw new Error("this run keeps no moving average of the weights (modelEmaDecay is 0)");
    const host = new Float32Array(this.ema.size);
    for (const s of this.model.specs) {
      const t = this.model.params.get(s.name);
      const w = weights.get(s.name);
      if (!w || w.length !== t.size) {
        throw new TypeError(`moving average: ${s.name} is missing or mis-sized`);
      }
      host.set(w, t.offset / 4);
    }
    writeTensor(this.model.gpu, this.ema, host);
    this.#emaStarted = true;
  }

  /** Frees the trainer's GPU buffers (the model stays). */
  destroy(): void {
    this.#program?.destroy();
    this.m.buffer.destroy();
    this.v.buffer.destroy();
    this.ema?.buffer.destroy();
    this.#backup?.buffer.destroy();
  }
}

/**
 * Evaluates `model` on a split: batches normalised on the host, one submission and one readback per batch and
 * view. With test-time augmentation the logits of the views are averaged before scoring.
 *
 * @param model The model, in evaluation mode (no dropout).
 * @param data Geometry, normalisation and class names, e.g. the {@link Dataset} the split comes from.
 * @param split The images to evaluate.
 * @param batchSize Images per forward pass (default 128).
 * @param options `tta`: the views to average (default "none", see {@link TestTimeAugmentation}).
 * @returns Mean loss, top-1, top-5 and the confusion matrix.
 *
 * @example Test accuracy of saved weights, with and without the mirror image
 * ```ts
 * import { CompactTransformer, evaluate, loadDataset } from "@compact-transformers/cct";
 *
 * const data = await loadDataset("synthetic:gray28");
 * const model = await CompactTransformer.create("cct_2_3x2_32", { imgSize: 28, inChannels: 1 });
 * await model.loadWeights("best.safetensors");
 * const r = await evaluate(model, data, data.test, 256);
 * const flip = await evaluate(model, data, data.test, 256, { tta: "flip" });
 * console.log(`top-1 ${(100 * r.top1).toFixed(1)}%, with flip TTA ${(100 * flip.top1).toFixed(1)}%`);
 * ```
 */
export async function evaluate(
  model: CompactTransformer,
  data: Pick<Dataset, "channels" | "height" | "width" | "mean" | "std" | "classes">,
  split: Split,
  batchSize = 128,
  options: { tta?: TestTimeAugmentation } = {},
): Promise<EvalResult> {
  const score = new Scoreboard(data.classes.length);
  for (const batch of batches(split, batchSize, { shuffle: false })) {
    score.add(await ttaLogits(model, batch.images, data, options.tta), batch.labels);
  }
  return score.result();
}

/** The first `count` images of a split (all of them if it has fewer). */
function firstImages(split: Split, count: number): Split {
  const n = Math.min(count, split.length);
  const size = split.length > 0 ? split.images.length / split.length : 0;
  return { length: n, images: split.images.subarray(0, n * size), labels: split.labels.subarray(0, n) };
}

/**
 * Accumulates loss, top-1, top-5 and the confusion matrix from logits. Ties rank by class index (a class above
 * the label only when its logit is larger, or equal with a smaller index) and non-finite logits count as wrong,
 * so a collapsed or NaN model never scores well.
 */
export class Scoreboard {
  #loss = 0;
  #top1 = 0;
  #top5 = 0;
  #count = 0;
  readonly confusion: number[][];

  /** @param classes Number of classes. */
  constructor(readonly classes: number) {
    this.confusion = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  }

  /** Adds a batch: logits [n, classes], labels [n]. */
  add(logits: Float32Array, labels: Int32Array): void {
    const k = this.classes;
    for (let i = 0; i < labels.length; i++) {
      const row = logits.subarray(i * k, (i + 1) * k);
      const label = labels[i];
      let max = -Infinity, arg = 0, finite = true;
      for (let j = 0; j < k; j++) {
        if (!Number.isFinite(row[j])) finite = false;
        if (row[j] > max) max = row[j], arg = j;
      }
      let sum = 0;
      for (let j = 0; j < k; j++) sum += Math.exp(row[j] - max);
      this.#loss += finite ? Math.log(sum) + max - row[label] : NaN;
      let rank = 0;
      for (let j = 0; j < k; j++) {
        if (row[j] > row[label] || (row[j] === row[label] && j < label)) rank++;
      }
      if (finite && rank === 0) this.#top1++;
      if (finite && rank < 5) this.#top5++;
      this.confusion[label][arg]++;
      this.#count++;
    }
  }

  /** The mean loss and accuracies so far (zeros for an empty split). */
  result(): EvalResult {
    const n = this.#count;
    return {
      loss: n ? this.#loss / n : 0,
      top1: n ? this.#top1 / n : 0,
      top5: n ? this.#top5 / n : 0,
      confusion: this.confusion,
      count: n,
    };
  }
}

/** Queues a GPU-side copy of `from` into `to` (same size), ordered with the other submissions. */
function copyTensor(gpu: Gpu, from: Tensor, to: Tensor): void {
  const encoder = gpu.device.createCommandEncoder({ label: `copy ${from.label}` });
  encoder.copyBufferToBuffer(from.buffer, from.offset, to.buffer, to.offset, from.byteLength);
  gpu.device.queue.submit([encoder.finish()]);
}

function padTo4(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  if (bytes.length % 4 === 0 && bytes.buffer instanceof ArrayBuffer) return bytes as Uint8Array<ArrayBuffer>;
  const out = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
  out.set(bytes);
  return out;
}
