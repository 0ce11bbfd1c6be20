/**
 * A compact transformer on the GPU: its parameter table, weight loading and saving under the official names,
 * batched inference and a debugging `lossAndGradients`. Programs (activations + recorded plan) are built once
 * per batch size and reused.
 */
import { getGpu, type Gpu } from "../gpu/device.ts";
import { Plan, UniformBlock } from "../gpu/plan.ts";
import { Arena, createTensor, readTensor, type Tensor, writeTensor } from "../gpu/tensor.ts";
import { deriveSeed } from "../gpu/random.ts";
import { crossEntropyForwardBackward } from "../kernels/loss.ts";
import { zero } from "../kernels/optimizer.ts";
import { parsePth } from "../io/pth.ts";
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from "../io/safetensors.ts";
import {
  customConfig,
  type ModelConfig,
  modelConfig,
  type ModelOptions,
  parameterCount,
  type ParameterSpec,
  parameterSpecs,
} from "./config.ts";
import { initParameters } from "./init.ts";
import {
  Activations,
  type PassContext,
  ratesOf,
  recordBackward,
  recordForward,
  seedWords,
} from "./network.ts";
import { type HostTensor, type MatchReport, matchStateDict } from "./weights.ts";

/** Options of {@link CompactTransformer.create}: architecture overrides plus the initialisation seed. */
export interface CreateOptions extends ModelOptions {
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/** Where weights can come from: file bytes (safetensors or `.pth`), a path, or name → tensor. */
export type WeightSource = Uint8Array | string | Map<string, HostTensor>;

/** Result of {@link CompactTransformer.lossAndGradients}. */
export interface LossAndGradients {
  /** Mean cross-entropy over the batch. */
  loss: number;
  /** Logits [n, classes], row-major. */
  logits: Float32Array;
  /** ∂loss/∂parameter for every trainable parameter, by official name. */
  gradients: Map<string, Float32Array>;
}

interface Program {
  acts: Activations;
  plan: Plan;
}

interface TrainProgram extends Program {
  labels: Tensor;
  losses: Tensor;
}

/** Reads the magic bytes: safetensors files start with a little-endian header length, `.pth` with "PK". */
function isZip(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x50 && bytes[1] === 0x4b;
}

/** Parses a weight file of either format into name → tensor. */
export function parseWeights(
  bytes: Uint8Array,
  source: string,
): { tensors: Map<string, HostTensor>; metadata: Record<string, string> } {
  if (isZip(bytes)) return { tensors: parsePth(bytes, source), metadata: {} };
  return parseSafetensors(bytes, source);
}

/**
 * ViT-Lite, CVT or CCT with its weights on the GPU.
 *
 * Create one with {@link CompactTransformer.create}; weights load from safetensors or official `.pth` files
 * under the PyTorch state-dict names. Inputs are normalised float32 images [n, c, h, w]; outputs are logits
 * [n, classes]. Call {@link CompactTransformer.destroy} to free GPU memory.
 *
 * @example Inference with pretrained weights
 * ```ts
 * import { CompactTransformer } from "@compact-transformers/cct";
 *
 * const model = await CompactTransformer.create("cct_7_3x1_32");
 * await model.loadWeights("cct_7_3x1_32_cifar10_300epochs.pth");
 * const logits = await model.forward(new Float32Array(2 * 3 * 32 * 32), [2, 3, 32, 32]);
 * console.log(logits.length); // 20: 2 images × 10 classes
 * model.destroy();
 * ```
 *
 * @example Fine-tune to another class count
 * ```ts
 * import { CompactTransformer } from "@compact-transformers/cct";
 *
 * const model = await CompactTransformer.create("cct_7_3x1_32", { numClasses: 37 });
 * const report = await model.loadWeights("cct_7_3x1_32_cifar10_300epochs.pth", { strict: false });
 * console.log(report); // the classifier stays freshly initialised
 * await Deno.writeFile("start.safetensors", await model.saveWeights({ note: "from CIFAR-10" }));
 * ```
 */
export class CompactTransformer {
  /** Parameters by official name, in one buffer: decayed weights, then other trainables, then frozen. */
  readonly params: Arena;
  /** The parameter table in the official state-dict order (see {@link parameterSpecs}). */
  readonly specs: ParameterSpec[];
  #inference = new Map<number, Program>();
  #train = new Map<number, TrainProgram>();
  #grads: Arena | undefined;
  #seeds: UniformBlock | undefined;

  private constructor(readonly gpu: Gpu, readonly config: ModelConfig) {
    this.specs = parameterSpecs(config);
    this.params = new Arena(`${config.name} parameters`);
    for (const s of orderedForArena(this.specs)) this.params.reserve(s.name, s.shape);
    this.params.allocate(gpu);
  }

  /**
   * Builds a registered model (see `modelNames()`) or a custom configuration, with seeded initial weights.
   *
   * @param nameOrConfig A registered name such as `"cct_7_3x1_32"`, or a config from {@link customConfig}.
   * @param options Overrides of the configuration, and `seed` (default 0) of the initial weights.
   * @returns The model, its parameters allocated and initialised on the process-wide GPU.
   * @throws {RangeError} If the name is unknown or an override is invalid.
   */
  static async create(
    nameOrConfig: string | ModelConfig,
    options: CreateOptions = {},
  ): Promise<CompactTransformer> {
    const { seed = 0, ...overrides } = options;
    const config = typeof nameOrConfig === "string"
      ? modelConfig(nameOrConfig, overrides)
      : customConfig(nameOrConfig, { ...configAsOptions(nameOrConfig), ...overrides });
    const model = new CompactTransformer(await getGpu(), config);
    model.#upload(initParameters(config, seed));
    return model;
  }

  /** Learnable parameter count. */
  get parameterCount(): number {
    return parameterCount(this.config);
  }

  /** The parameter table: official name, shape, whether it trains and whether weight decay applies. */
  parameters(): { name: string; shape: number[]; trainable: boolean; decay: boolean }[] {
    return this.specs.map((s) => ({
      name: s.name,
      shape: [...s.shape],
      trainable: s.trainable,
      decay: s.decay,
    }));
  }

  #upload(values: Map<string, Float32Array>): void {
    for (const [name, data] of values) writeTensor(this.gpu, this.params.get(name), data);
  }

  /**
   * Loads weights from safetensors or an official PyTorch `.pth` (bytes or a path). Strict by default: every
   * name and shape must match, and all problems are reported in one TypeError. With `strict: false` a
   * classifier of another class count is left at its initial values, a learnable positional embedding is
   * resized and the first conv is adapted to another input channel count (`matchStateDict`). Nothing is written
   * to the model unless the whole file is valid.
   */
  async loadWeights(
    source: WeightSource,
    { strict = true, name }: {
      strict?: boolean;
      /** Names the source in error messages (a path is named by itself). */
      name?: string;
    } = {},
  ): Promise<MatchReport> {
    let tensors: Map<string, HostTensor>;
    const label = name ??
      (typeof source === "string" ? source : source instanceof Uint8Array ? "<bytes>" : "weights");
    if (typeof source === "string") {
      tensors = parseWeights(await Deno.readFile(source), label).tensors;
    } else if (source instanceof Uint8Array) {
      tensors = parseWeights(source, label).tensors;
    } else tensors = source;
    const { values, report } = matchStateDict(this.config, tensors, { strict, source: label });
    this.#upload(values);
    return report;
  }

  /** Every parameter read back from the GPU, by official name. */
  async getWeights(): Promise<Map<string, Float32Array>> {
    const all = await readTensor(this.gpu, this.params.whole());
    const out = new Map<string, Float32Array>();
    for (const s of this.specs) {
      const t = this.params.get(s.name);
      out.set(s.name, all.slice(t.offset / 4, t.offset / 4 + t.size));
    }
    return out;
  }

  /** The weights as a safetensors file (official names and shapes), with `metadata` plus the model's config. */
  async saveWeights(metadata: Record<string, string> = {}): Promise<Uint8Array> {
    const weights = await this.getWeights();
    const tensors = new Map<string, TensorToWrite>();
    for (const s of this.specs) tensors.set(s.name, { shape: s.shape, data: weights.get(s.name)! });
    return serializeSafetensors(tensors, {
      format: "cct-webgpu/1",
      model: this.config.name,
      config: JSON.stringify(this.config),
      ...metadata,
    });
  }

  #program(batch: number): Program {
    let p = this.#inference.get(batch);
    if (!p) {
      const acts = new Activations(this.gpu, this.config, batch, false);
      const plan = new Plan(this.gpu, `${this.config.name} forward b${batch}`);
      recordForward(plan, {
        config: this.config,
        params: this.params,
        acts,
        rates: ratesOf(this.config, false),
      });
      p = { acts, plan };
      this.#inference.set(batch, p);
    }
    return p;
  }

  #checkInput(input: Float32Array, shape: readonly number[]): number {
    const c = this.config;
    const [n, ch, h, w] = shape;
    if (shape.length !== 4 || ch !== c.inChannels || h !== c.imgHeight || w !== c.imgWidth || !(n >= 1)) {
      throw new TypeError(
        `${c.name}: input shape [${shape}] does not match [n, ${c.inChannels}, ${c.imgHeight}, ${c.imgWidth}]`,
      );
    }
    if (input.length !== n * ch * h * w) {
      throw new TypeError(
        `${c.name}: input has ${input.length} values, shape [${shape}] needs ${n * ch * h * w}`,
      );
    }
    return n;
  }

  /** Logits [n, classes] of a batch of normalised images [n, c, h, w] (evaluation mode: no dropout). */
  async forward(
    input: Float32Array,
    shape: readonly [number, number, number, number],
  ): Promise<Float32Array> {
    const n = this.#checkInput(input, shape);
    const p = this.#program(n);
    writeTensor(this.gpu, p.acts.get("input"), input);
    const [logits] = await p.plan.runAndRead([p.acts.get("logits")]);
    return logits;
  }

  /** The gradient table (created on first use), same names as the trainable parameters. */
  get gradients(): Arena {
    if (!this.#grads) {
      this.#grads = new Arena(`${this.config.name} gradients`);
      for (const s of orderedForArena(this.specs)) if (s.trainable) this.#grads.reserve(s.name, s.shape);
      this.#grads.allocate(this.gpu);
    }
    return this.#grads;
  }

  /** The per-step seed block of the random sites (dropout, attention dropout, drop-path). */
  get seeds(): UniformBlock {
    this.#seeds ??= new UniformBlock(this.gpu, seedWords(this.config), `${this.config.name} seeds`);
    return this.#seeds;
  }

  /** Writes the seeds of step `step` of a run seeded `runSeed` (effective from the next submission). */
  setStepSeeds(runSeed: number, step: number): void {
    const block = this.seeds;
    for (let w = 0; w < seedWords(this.config); w++) block.u32[w] = deriveSeed(runSeed, step, w);
    block.flush();
  }

  /**
   * Records a full training pass into `plan` for activations `acts` (forward with `train` rates, loss, zeroed
   * gradients, backward). Used by the trainer and by {@link lossAndGradients}.
   */
  recordTrainingPass(plan: Plan, acts: Activations, train: boolean): PassContext {
    const ctx: PassContext = {
      config: this.config,
      params: this.params,
      acts,
      rates: ratesOf(this.config, train),
      seeds: train ? this.seeds : undefined,
    };
    recordForward(plan, ctx);
    return ctx;
  }

  /**
   * Mean cross-entropy of a batch and its gradient for every trainable parameter, in evaluation mode (no
   * dropout, no augmentation, no label smoothing): for debugging and gradient checks.
   */
  async lossAndGradients(
    input: Float32Array,
    shape: readonly [number, number, number, number],
    labels: Int32Array,
  ): Promise<LossAndGradients> {
    const n = this.#checkInput(input, shape);
    if (labels.length !== n) {
      throw new TypeError(`${this.config.name}: ${labels.length} labels for a batch of ${n}`);
    }
    for (const l of labels) {
      if (!(l >= 0 && l < this.config.numClasses)) {
        throw new RangeError(`${this.config.name}: label ${l} outside [0, ${this.config.numClasses})`);
      }
    }
    let p = this.#train.get(n);
    if (!p) {
      const acts = new Activations(this.gpu, this.config, n, true);
      const plan = new Plan(this.gpu, `${this.config.name} loss and gradients b${n}`);
      const labelsT = createTensor(this.gpu, [n], "labels");
      const losses = createTensor(this.gpu, [n], "losses");
      const ctx = this.recordTrainingPass(plan, acts, false);
      crossEntropyForwardBackward(plan, losses, acts.get("dlogits"), acts.get("logits"), labelsT, {
        batch: n,
        classes: this.config.numClasses,
      });
      zero(plan, this.gradients.whole());
      recordBackward(plan, ctx, this.gradients);
      p = { acts, plan, labels: labelsT, losses };
      this.#train.set(n, p);
    }
    writeTensor(this.gpu, p.acts.get("input"), input);
    writeTensor(this.gpu, p.labels, labels);
    const [losses, logits, all] = await p.plan.runAndRead([
      p.losses,
      p.acts.get("logits"),
      this.gradients.whole(),
    ]);
    const gradients = new Map<string, Float32Array>();
    for (const s of this.specs) {
      if (!s.trainable) continue;
      const t = this.gradients.get(s.name);
      gradients.set(s.name, all.slice(t.offset / 4, t.offset / 4 + t.size));
    }
    return { loss: losses.reduce((a, b) => a + b, 0) / n, logits, gradients };
  }

  /** Frees every GPU buffer of the model. */
  destroy(): void {
    for (const p of [...this.#inference.values(), ...this.#train.values()]) {
      p.acts.destroy();
      p.plan.destroy();
    }
    this.#inference.clear();
    this.#train.clear();
    this.params.destroy();
    this.#grads?.destroy();
  }
}

/** Decayed trainables first, then the other trainables, then frozen tables: two contiguous AdamW ranges. */
export function orderedForArena(specs: ParameterSpec[]): ParameterSpec[] {
  return [
    ...specs.filter((s) => s.trainable && s.decay),
    ...specs.filter((s) => s.trainable && !s.decay),
    ...specs.filter((s) => !s.trainable),
  ];
}

function configAsOptions(c: ModelConfig): ModelOptions {
  return {
    imgSize: [c.imgHeight, c.imgWidth],
    inChannels: c.inChannels,
    numClasses: c.numClasses,
    positionalEmbedding: c.positionalEmbedding,
    dropout: c.dropout,
    attentionDropout: c.attentionDropout,
    stochasticDepth: c.stochasticDepth,
    kernelSize: c.kernelSize,
    convLayers: c.convLayers,
  };
}

/**
 * Builds a registered model (or a custom configuration) with seeded initial weights: shorthand for
 * {@link CompactTransformer.create}.
 *
 * @example
 * ```ts
 * import { createModel } from "@compact-transformers/cct";
 *
 * const model = await createModel("cvt_7_4_32", { numClasses: 100 });
 * console.log(model.parameterCount);
 * ```
 */
export function createModel(
  nameOrConfig: string | ModelConfig,
  options: CreateOptions = {},
): Promise<CompactTransformer> {
  return CompactTransformer.create(nameOrConfig, options);
}
