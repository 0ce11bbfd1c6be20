/**
 * Command-line interface of the Compact Transformers module.
 *
 * ```sh
 * deno run --allow-read --allow-write=runs cli.ts train --dataset fashion-mnist --epochs 20
 * deno run --allow-read cli.ts predict --weights runs/x/best.safetensors image.png
 * deno run --allow-read cli.ts eval --weights runs/x/best.safetensors --dataset fashion-mnist
 * deno run --allow-read --allow-write cli.ts convert cct_7_3x1_32.pth cct_7_3x1_32.safetensors
 * deno run cli.ts bench --model cct_2_3x2_32 --img-size 28 --channels 1
 * deno run cli.ts info
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { getGpu } from "./lib/gpu/device.ts";
import {
  forwardMacs,
  type ModelConfig,
  modelConfig,
  modelNames,
  type ModelOptions,
  parameterCount,
  type PositionalEmbedding,
  sequenceLength,
} from "./lib/models/config.ts";
import { CompactTransformer, parseWeights } from "./lib/models/model.ts";
import type { HostTensor } from "./lib/models/weights.ts";
import { loadDataset } from "./lib/data/load.ts";
import type { Dataset } from "./lib/data/dataset.ts";
import { readImage, toModelInput, toUint8CHW } from "./lib/io/image.ts";
import { writeFileAtomic } from "./lib/io/atomic.ts";
import { serializeSafetensors } from "./lib/io/safetensors.ts";
import {
  checkpointConfig,
  checkpointInfo,
  loadTrainingState,
  saveTrainingState,
  saveWeightsCheckpoint,
} from "./lib/train/checkpoint.ts";
import {
  defaultTrainOptions,
  evaluate,
  NonFiniteLossError,
  Trainer,
  type TrainOptions,
} from "./lib/train/trainer.ts";
import { TEST_TIME_AUGMENTATIONS, type TestTimeAugmentation, ttaLogits } from "./lib/train/tta.ts";
import {
  confusionMatrixText,
  formatEpochSummary,
  formatProgressBar,
  formatProgressLine,
  MetricsLog,
  writeRunPlots,
} from "./lib/train/report.ts";
import { benchmarkModel } from "./lib/benchmark.ts";
import { tuneModel } from "./lib/models/tune.ts";

/** A mistake in the command line: printed with the usage, exit code 2. */
class UsageError extends Error {}

const HELP = `Compact Transformers (ViT-Lite, CVT, CCT) on WebGPU

usage: cli.ts <command> [options]

commands:
  train     train a model (default: a small CCT on the embedded synthetic data set)
  eval      evaluate weights on a data set: top-1, top-5, loss, confusion matrix
  predict   classify PNG/JPEG images with trained weights
  convert   convert an official PyTorch .pth checkpoint to safetensors
  bench     measure inference and training throughput of a model on this adapter
  info      show the GPU adapter and the model zoo

run 'cli.ts <command> --help' for the options of a command.`;

const TRAIN_HELP = `usage: cli.ts train [options]

model
  --model NAME            registered model (default cct_2_3x2_32; 'cli.ts info' lists all) or another
                          name in the paper's grammar, e.g. cct_2_7x1_28 (one 7×7 conv layer); image size,
                          channels and classes are taken from the data
  --pos-emb KIND          positional embedding: learnable | sine | none (default: the model's)
  --drop-path P           stochastic depth rate (default 0.1)
  --dropout P             dropout (default 0)
  --attn-drop P           attention dropout (default 0.1)
data
  --dataset SPEC          synthetic[:gray|rgb][size] (default synthetic:gray28), fashion-mnist[:DIR],
                          mnist:DIR, cifar10:DIR, cifar100:DIR, cifar100-coarse:DIR, folder:DIR
  --data DIR              shorthand for --dataset folder:DIR
  --img-size N            resize image folders to N×N (default 32)
  --channels N            image folders as 1 (gray) or 3 (RGB, default) channels
optimisation (timm names)
  --epochs N              epochs of the cosine schedule (default 3 on the synthetic set, 10 otherwise)
  --batch-size N          batch size (default 128)
  --lr LR                 peak learning rate (default 1e-3)
  --min-lr LR             final learning rate of the cosine (default 1e-5)
  --warmup-epochs N       linear warm-up epochs (default 1)
  --warmup-lr LR          learning rate at the start of warm-up (default 1e-5)
  --cooldown-epochs N     extra epochs at --min-lr after the cosine (default 0)
  --weight-decay WD       AdamW decoupled weight decay, not on 1-D biases/norms (default 0.05)
  --clip-grad NORM        clip the global gradient norm (default off)
  --smoothing EPS         label smoothing (default 0.1)
  --model-ema             also keep an exponential moving average of the weights, updated every step
                          (timm's flag): evaluated beside them (twice the evaluation time), saved as
                          last_ema.safetensors; best.safetensors holds whichever of the two scored best
  --model-ema-decay D     its decay per step (default 0.9998: a horizon of ~5,000 steps); implies
                          --model-ema, and 0 turns it off (e.g. on --resume)
  --model-ema-warmup      warm the decay up as timm does: 1 − (1 + step)^(−2/3) until it reaches D, so
                          the average of a short run forgets the initial weights
augmentation
  --crop-pad N            random crop with N pixels of zero padding (default 2)
  --resized-crop MIN      random resized crop with scale MIN..1 instead (the paper's 0.8)
  --no-flip               no random horizontal flip
  --mixup ALPHA           mixup alpha (default off; the paper's 0.8)
  --cutmix ALPHA          cutmix alpha (default off; the paper's 1.0)
  --mixup-switch-prob P   probability of cutmix when both are on (default 0.5)
  --reprob P              random erasing probability (default off; the paper's 0.25)
  --aa POLICY             RandAugment policy, e.g. rand-m9-mstd0.5-inc1
run
  --seed N                seed of data order, augmentation, dropout and initial weights (default 0)
  --output DIR            output folder (default runs/<model>-<dataset>-<time>)
  --resume FILE           continue a run from its last.state.safetensors
  --finetune FILE         start a new run from these weights (safetensors or an official .pth), as DeiT's
                          --finetune: the file's model (its size, depth and rates) unless --model names
                          one, and its geometry for image folders; a head of another class count or other
                          class names is re-initialised, a learnable positional embedding resized to the
                          data, the first conv adapted to its channels (RGB summed for gray, as timm does)
  --config FILE           JSON file of options (keys as above, camelCase or as flags); flags win
  --log-every N           steps between progress reports (default 20)
  --eval-every N          evaluate the test split every N epochs and after the last (default 1; 0: only
                          after the last), to spend a short run's time on training
  --tta MODE              test-time augmentation of the test evaluations: none (default), flip (average
                          the logits of the image and its mirror), flip-shift (also four 1-pixel shifts);
                          only for data trained with flips
  --tune                  time every matmul variant on this adapter for the model's shapes first and keep
                          the fastest (remembered in <output>/tune.json; costs a minute or so once)
  -h, --help              this help`;

const trainFlags = {
  model: { type: "string" },
  "pos-emb": { type: "string" },
  "drop-path": { type: "string" },
  dropout: { type: "string" },
  "attn-drop": { type: "string" },
  dataset: { type: "string" },
  data: { type: "string" },
  "img-size": { type: "string" },
  channels: { type: "string" },
  epochs: { type: "string" },
  "batch-size": { type: "string" },
  lr: { type: "string" },
  "min-lr": { type: "string" },
  "warmup-epochs": { type: "string" },
  "warmup-lr": { type: "string" },
  "cooldown-epochs": { type: "string" },
  "weight-decay": { type: "string" },
  "clip-grad": { type: "string" },
  smoothing: { type: "string" },
  "model-ema": { type: "boolean" },
  "model-ema-decay": { type: "string" },
  "model-ema-warmup": { type: "boolean" },
  "crop-pad": { type: "string" },
  "resized-crop": { type: "string" },
  "no-flip": { type: "boolean" },
  mixup: { type: "string" },
  cutmix: { type: "string" },
  "mixup-switch-prob": { type: "string" },
  reprob: { type: "string" },
  aa: { type: "string" },
  seed: { type: "string" },
  output: { type: "string" },
  resume: { type: "string" },
  finetune: { type: "string" },
  config: { type: "string" },
  "log-every": { type: "string" },
  "eval-every": { type: "string" },
  tta: { type: "string" },
  tune: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

type Values = Record<string, string | boolean | undefined>;

function parse<T extends Record<string, { type: "string" | "boolean"; short?: string }>>(
  args: string[],
  options: T,
  positionals = false,
): { values: Values; positionals: string[] } {
  try {
    return parseArgs({ args, options, allowPositionals: positionals, strict: true }) as {
      values: Values;
      positionals: string[];
    };
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

/** A number flag, checked; `undefined` when absent. */
function num(values: Values, flag: string, { min = -Infinity, max = Infinity, integer = false } = {}) {
  const raw = values[flag];
  if (raw === undefined || typeof raw === "boolean") return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new UsageError(
      `--${flag} ${raw}: expected ${integer ? "an integer" : "a number"}${
        Number.isFinite(min) ? ` ≥ ${min}` : ""
      }${Number.isFinite(max) ? ` ≤ ${max}` : ""}`,
    );
  }
  return v;
}

/** Reads a JSON config file whose keys are flag names or camelCase option names; returns flag values. */
async function readConfigFile(path: string): Promise<Values> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof SyntaxError) throw new SyntaxError(`${path}: not valid JSON (${e.message})`);
    throw e;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new SyntaxError(`${path}: expected a JSON object of options`);
  }
  const out: Values = {};
  for (const [key, value] of Object.entries(parsed)) {
    const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    if (!(flag in trainFlags)) throw new SyntaxError(`${path}: unknown option "${key}"`);
    out[flag] = typeof value === "boolean" ? value : String(value);
  }
  return out;
}

function trainOptionsFrom(v: Values, base: Partial<TrainOptions>): Partial<TrainOptions> {
  const o: Partial<TrainOptions> = { ...base };
  const set = <K extends keyof TrainOptions>(key: K, value: TrainOptions[K] | undefined) => {
    if (value !== undefined) o[key] = value;
  };
  set("epochs", num(v, "epochs", { min: 1, integer: true }));
  set("batchSize", num(v, "batch-size", { min: 1, integer: true }));
  set("lr", num(v, "lr", { min: 0 }));
  set("minLr", num(v, "min-lr", { min: 0 }));
  set("warmupEpochs", num(v, "warmup-epochs", { min: 0 }));
  set("warmupLr", num(v, "warmup-lr", { min: 0 }));
  set("cooldownEpochs", num(v, "cooldown-epochs", { min: 0 }));
  set("weightDecay", num(v, "weight-decay", { min: 0 }));
  set("clipGrad", num(v, "clip-grad", { min: 0 }));
  set("smoothing", num(v, "smoothing", { min: 0, max: 1 }));
  set("cropPadding", num(v, "crop-pad", { min: 0, integer: true }));
  const rc = num(v, "resized-crop", { min: 0.01, max: 1 });
  if (rc !== undefined) o.resizedCropScale = [rc, 1];
  if (v["no-flip"]) o.flip = false;
  if (typeof v.aa === "string") o.randAugment = v.aa === "none" ? "" : v.aa;
  set("mixup", num(v, "mixup", { min: 0 }));
  set("cutmix", num(v, "cutmix", { min: 0 }));
  set("mixupSwitchProb", num(v, "mixup-switch-prob", { min: 0, max: 1 }));
  set("reprob", num(v, "reprob", { min: 0, max: 1 }));
  set("seed", num(v, "seed", { min: 0, max: 2 ** 32 - 1, integer: true }));
  set("logEvery", num(v, "log-every", { min: 1, integer: true }));
  set("evalEvery", num(v, "eval-every", { min: 0, integer: true }));
  set("tta", ttaFlag(v));
  const emaDecay = num(v, "model-ema-decay", { min: 0 });
  if (emaDecay !== undefined && emaDecay >= 1) {
    throw new UsageError(`--model-ema-decay ${emaDecay}: expected a number ≥ 0 and < 1`);
  }
  if (emaDecay !== undefined) o.modelEmaDecay = emaDecay;
  else if (v["model-ema"] || v["model-ema-warmup"]) o.modelEmaDecay ||= DEFAULT_MODEL_EMA_DECAY;
  if (v["model-ema-warmup"]) o.modelEmaWarmup = true;
  return o;
}

/** timm's default `--model-ema-decay`. */
const DEFAULT_MODEL_EMA_DECAY = 0.9998;

/** The `--tta` flag, checked; `undefined` when absent. */
function ttaFlag(values: Values): TestTimeAugmentation | undefined {
  const raw = values.tta;
  if (raw === undefined || typeof raw === "boolean") return undefined;
  if (!(TEST_TIME_AUGMENTATIONS as readonly string[]).includes(raw)) {
    throw new UsageError(`--tta ${raw}: expected one of ${TEST_TIME_AUGMENTATIONS.join(", ")}`);
  }
  return raw as TestTimeAugmentation;
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "-");
}

/**
 * `loadDataset`'s folder geometry: `--img-size` and `--channels`, else the model's being continued or
 * fine-tuned, else the loader's defaults (32, RGB). Other data sets have a geometry of their own.
 */
function folderGeometry(v: Values, spec: string, model: ModelConfig | undefined) {
  const size = num(v, "img-size", { min: 4, integer: true });
  const channels = num(v, "channels", { min: 1, max: 3, integer: true });
  if (!spec.startsWith("folder:")) {
    if (size !== undefined || channels !== undefined) {
      throw new UsageError(`--img-size and --channels are for image folders; ${spec} has its own geometry`);
    }
    return {};
  }
  if (channels === 2) throw new UsageError("--channels 2: expected 1 (gray) or 3 (RGB)");
  const square = model && model.imgHeight === model.imgWidth ? model.imgHeight : undefined;
  const loadable = model && (model.inChannels === 1 || model.inChannels === 3) ? model.inChannels : undefined;
  return { size: size ?? square, channels: channels ?? loadable };
}

/**
 * Loads `--finetune` weights non-strictly and says what changed. A head trained on other class names is dropped
 * even when the count matches; tensors of blocks or layers the model lacks are an error (a deeper model's file
 * would otherwise be silently cut down), anything else the model does not use (optimizer state) is skipped.
 */
async function loadFinetuneWeights(
  model: CompactTransformer,
  file: { tensors: Map<string, HostTensor>; metadata: Record<string, string> },
  path: string,
  classes: string[],
): Promise<void> {
  let tensors = file.tensors;
  let saved: unknown;
  try {
    saved = JSON.parse(file.metadata.classes ?? "null");
  } catch { /* an unreadable class list is no reason to refuse the weights */ }
  const otherClasses = Array.isArray(saved) && saved.length === classes.length &&
    saved.some((name, i) => name !== classes[i]);
  if (otherClasses) tensors = new Map([...tensors].filter(([name]) => !name.startsWith("classifier.fc.")));
  const report = await model.loadWeights(tensors, { strict: false, name: path });
  const foreign = report.ignored.filter((name) => /^(tokenizer|classifier)\./.test(name));
  if (foreign.length) {
    throw new TypeError(
      `${path}: ${foreign.length} tensors do not fit ${model.config.name} (${foreign.slice(0, 3).join(", ")}${
        foreign.length > 3 ? ", …" : ""
      }): a deeper or different model; name the right one with --model`,
    );
  }
  const changes = [
    report.reinitialised.length
      ? `re-initialised ${report.reinitialised.join(", ")}${otherClasses ? " (other class names)" : ""}`
      : "",
    report.adapted.length ? `adapted ${report.adapted.join(", ")}` : "",
    report.ignored.length ? `${report.ignored.length} tensors not used, e.g. ${report.ignored[0]}` : "",
  ].filter((c) => c);
  console.log(`initial weights: ${path}${changes.length ? ` (${changes.join("; ")})` : ""}`);
}

async function train(args: string[]): Promise<number> {
  const { values: flags } = parse(args, trainFlags);
  if (flags.help) {
    console.log(TRAIN_HELP);
    return 0;
  }
  const v: Values = flags.config ? { ...(await readConfigFile(flags.config as string)), ...flags } : flags;
  const resume = v.resume as string | undefined;
  const finetune = v.finetune as string | undefined;
  if (resume && finetune) {
    throw new UsageError("--resume continues a run and --finetune starts one: give one of them");
  }
  const saved = resume ? await loadTrainingState(resume) : undefined;
  // Read before the data: a bad file fails at once, and its model's geometry is the default for image folders.
  const start = finetune ? parseWeights(await Deno.readFile(finetune), finetune) : undefined;
  if (start && !start.metadata.config && !v.model) {
    throw new UsageError(
      `${finetune} carries no model description (an official .pth?): name it with --model`,
    );
  }
  const own = start && !v.model ? checkpointConfig(start.metadata, finetune!) : undefined;
  const dataSpec = v.data ? `folder:${v.data}` : (v.dataset as string | undefined) ??
    saved?.metadata.dataset_spec ?? saved?.info.dataset ?? "synthetic:gray28";
  const seed = num(v, "seed", { min: 0, integer: true }) ?? saved?.options.seed ?? 0;
  // A few minutes on a CPU adapter for the embedded set; real data sets get the longer default. Flags are
  // checked here, before the data and the model load.
  const baseOptions = saved?.options ?? (dataSpec.startsWith("synthetic") ? { epochs: 3 } : {});
  const trainOptions = trainOptionsFrom(v, baseOptions);
  const data = await loadDataset(dataSpec, {
    seed,
    ...folderGeometry(v, dataSpec, saved?.info.config ?? own),
  });

  let model: CompactTransformer;
  if (saved) {
    model = await CompactTransformer.create(saved.info.config, {});
    await model.loadWeights(saved.weights);
  } else {
    const options: ModelOptions = {
      imgSize: [data.height, data.width],
      inChannels: data.channels,
      numClasses: data.classes.length,
      stochasticDepth: num(v, "drop-path", { min: 0, max: 0.99 }),
      dropout: num(v, "dropout", { min: 0, max: 0.99 }),
      attentionDropout: num(v, "attn-drop", { min: 0, max: 0.99 }),
    };
    if (v["pos-emb"]) options.positionalEmbedding = v["pos-emb"] as PositionalEmbedding;
    for (const k of Object.keys(options) as (keyof ModelOptions)[]) {
      if (options[k] === undefined) delete options[k];
    }
    // The data decide geometry and classes; a checkpoint's own config keeps its depth, width and rates.
    const base = (v.model as string | undefined) ?? own ?? "cct_2_3x2_32";
    model = await CompactTransformer.create(base, { ...options, seed });
    if (start) await loadFinetuneWeights(model, start, finetune!, data.classes);
  }
  if (saved) {
    // Steps per epoch decide the schedule, the seeds and the data order of the run being continued.
    for (const key of ["batchSize", "seed"] as const) {
      if (trainOptions[key] !== saved.options[key]) {
        throw new UsageError(`--resume continues a run with ${key} ${saved.options[key]}; it cannot change`);
      }
    }
  }
  const output = (v.output as string | undefined) ??
    (resume ? join(resume, "..") : join("runs", `${model.config.name}-${data.name}-${stamp()}`));
  await Deno.mkdir(output, { recursive: true });

  const o = defaultTrainOptions(trainOptions);
  if (v.tune) {
    const file = join(output, "tune.json");
    console.log(`tuning matmul kernels for ${model.config.name} at batch ${o.batchSize} (${file})…`);
    const timed = await tuneModel(model.gpu, model.config, o.batchSize, { file });
    console.log(`tuned ${timed} shape classes`);
  }
  const terminal = Deno.stdout.isTerminal();
  const log = saved
    ? await MetricsLog.load(join(output, "metrics.jsonl"))
    : new MetricsLog(join(output, "metrics.jsonl"));
  const encoder = new TextEncoder();
  const trainer = new Trainer(model, data, o, {
    onProgress(m) {
      const fields = { ...m, epochs: o.epochs + o.cooldownEpochs };
      if (terminal) Deno.stdout.writeSync(encoder.encode(`\r\x1b[2K${formatProgressBar(fields)}`));
      else console.log(formatProgressLine(fields));
      log.logProgress(m).catch((e) => console.error(`warning: metrics.jsonl: ${e.message}`));
    },
    async onEpoch(s, t) {
      if (terminal) Deno.stdout.writeSync(encoder.encode("\r\x1b[2K"));
      // bestTop1 already includes this epoch, of the weights or their average: a tie means this epoch set it.
      const emaLeads = s.testEma !== undefined && s.test !== undefined && s.testEma.top1 > s.test.top1;
      const scored = emaLeads ? s.testEma : s.test;
      const best = scored !== undefined && scored.top1 >= t.state.bestTop1;
      console.log(formatEpochSummary({ ...s, epochs: o.epochs + o.cooldownEpochs, best }));
      await log.logEpoch({ ...s, best });
      await saveWeightsCheckpoint(output, "last", t);
      if (t.ema) await saveWeightsCheckpoint(output, "last_ema", t, { ema: true });
      if (best) await saveWeightsCheckpoint(output, "best", t, { ema: emaLeads });
      await saveTrainingState(output, t, { dataset_spec: dataSpec });
      await writeRunPlots(output, log.history, { classes: data.classes, confusion: s.test?.confusion });
    },
  });
  if (saved) {
    await log.rewind(saved.state.epoch); // epochs after the checkpoint are redone
    trainer.state = { ...saved.state };
    trainer.setMoments(saved.m, saved.v);
    if (saved.ema && trainer.ema) trainer.setEmaWeights(saved.ema);
    console.log(`resuming ${resume} at epoch ${trainer.state.epoch}, step ${trainer.state.globalStep}`);
  }
  const gpu = model.gpu;
  console.log(
    `training ${model.config.name} (${model.parameterCount.toLocaleString("en-US")} parameters) on ` +
      `${data.name} (${data.train.length} train / ${data.test.length} test, ${data.channels}×${data.height}×` +
      `${data.width}, ${data.classes.length} classes) for ${
        o.epochs + o.cooldownEpochs
      } epochs, batch ${o.batchSize}, ` +
      `${o.tta === "none" ? "" : `test views averaged (${o.tta} TTA), `}on ${gpu.description}`,
  );
  console.log(`output: ${output}`);
  const t0 = performance.now();
  let last;
  try {
    last = await trainer.run();
  } catch (e) {
    if (e instanceof NonFiniteLossError) {
      console.error(`\nerror: ${e.message}`);
      return 1;
    }
    throw e;
  }
  const minutes = (performance.now() - t0) / 60000;
  if (last?.test) {
    console.log(
      `\nconfusion matrix (test, epoch ${last.epoch}):\n${
        confusionMatrixText(data.classes, last.test.confusion)
      }`,
    );
    const ema = last.testEma ? `, of the moving average ${(last.testEma.top1 * 100).toFixed(2)}%` : "";
    console.log(
      `done in ${minutes.toFixed(1)} min: test top-1 ${(last.test.top1 * 100).toFixed(2)}%${ema}, best ` +
        `${(trainer.state.bestTop1 * 100).toFixed(2)}%`,
    );
  }
  const files = ["best", "last", ...(trainer.ema ? ["last_ema"] : [])];
  console.log(`checkpoints: ${files.map((f) => join(output, `${f}.safetensors`)).join(", ")}`);
  console.log(
    `plots: ${join(output, "curves.svg")}, ${join(output, "confusion.svg")}; log: ${
      join(output, "metrics.jsonl")
    }`,
  );
  trainer.destroy();
  return 0;
}

/** Loads weights with their metadata, or with --model for files that carry none (official checkpoints). */
async function loadForInference(weights: string, modelName: string | undefined): Promise<{
  model: CompactTransformer;
  mean: number[];
  std: number[];
  classes: string[];
}> {
  const bytes = await Deno.readFile(weights);
  const file = parseWeights(bytes, weights);
  let model: CompactTransformer;
  let mean: number[], std: number[], classes: string[];
  if (file.metadata.config) {
    const info = checkpointInfo(file.metadata, weights);
    model = await CompactTransformer.create(info.config);
    ({ mean, std, classes } = info);
  } else {
    if (!modelName) {
      throw new UsageError(`${weights} carries no model description: name the model with --model`);
    }
    const fc = file.tensors.get("classifier.fc.weight");
    const config = modelConfig(modelName, fc ? { numClasses: fc.shape[0] } : {});
    model = await CompactTransformer.create(config);
    // Official CIFAR models use CIFAR-10 statistics; ImageNet-size models ImageNet's (SPEC §4).
    const imagenet = config.imgHeight >= 224;
    mean = imagenet ? [0.485, 0.456, 0.406] : [0.4914, 0.4822, 0.4465];
    std = imagenet ? [0.229, 0.224, 0.225] : [0.2470, 0.2435, 0.2616];
    mean = mean.slice(0, config.inChannels);
    std = std.slice(0, config.inChannels);
    classes = Array.from({ length: config.numClasses }, (_, i) => String(i));
  }
  await model.loadWeights(file.tensors, { name: weights });
  return { model, mean, std, classes };
}

async function predict(args: string[]): Promise<number> {
  const { values: v, positionals } = parse(args, {
    weights: { type: "string" },
    model: { type: "string" },
    top: { type: "string" },
    json: { type: "boolean" },
    tta: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, true);
  if (v.help || !v.weights || positionals.length === 0) {
    console.log(
      "usage: cli.ts predict --weights FILE [--model NAME] [--top K] [--json] [--tta none|flip|flip-shift] IMAGE...",
    );
    return v.help ? 0 : 2;
  }
  const top = num(v, "top", { min: 1, integer: true }) ?? 5;
  const tta = ttaFlag(v) ?? "none";
  const { model, mean, std, classes } = await loadForInference(
    v.weights as string,
    v.model as string | undefined,
  );
  const c = model.config;
  const plane = c.inChannels * c.imgHeight * c.imgWidth;
  const geometry = { channels: c.inChannels, height: c.imgHeight, width: c.imgWidth, mean, std };
  let logits: Float32Array;
  if (tta === "none") {
    const input = new Float32Array(positionals.length * plane);
    for (const [i, path] of positionals.entries()) {
      input.set(toModelInput(await readImage(path), geometry), i * plane);
    }
    logits = await model.forward(input, [positionals.length, c.inChannels, c.imgHeight, c.imgWidth]);
  } else {
    // The views are formed on bytes, as for data sets (image folders are stored as these bytes too).
    const bytes = new Uint8Array(positionals.length * plane);
    for (const [i, path] of positionals.entries()) {
      bytes.set(toUint8CHW(await readImage(path), geometry), i * plane);
    }
    logits = await ttaLogits(model, bytes, geometry, tta);
  }
  const results = positionals.map((path, i) => {
    const row = logits.subarray(i * c.numClasses, (i + 1) * c.numClasses);
    const max = Math.max(...row);
    const exp = Array.from(row, (x) => Math.exp(x - max));
    const sum = exp.reduce((a, b) => a + b, 0);
    const ranked = exp.map((e, k) => ({ class: classes[k] ?? String(k), index: k, probability: e / sum }))
      .sort((a, b) => b.probability - a.probability).slice(0, top);
    return { image: path, predictions: ranked };
  });
  if (v.json) console.log(JSON.stringify(results, null, 2));
  else {
    for (const r of results) {
      console.log(r.image);
      for (const p of r.predictions) {
        console.log(`  ${(p.probability * 100).toFixed(2).padStart(6)}%  ${p.class}`);
      }
    }
  }
  model.destroy();
  return 0;
}

async function evalCommand(args: string[]): Promise<number> {
  const { values: v } = parse(args, {
    weights: { type: "string" },
    model: { type: "string" },
    dataset: { type: "string" },
    data: { type: "string" },
    "batch-size": { type: "string" },
    split: { type: "string" },
    tta: { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (v.help || !v.weights) {
    console.log(
      "usage: cli.ts eval --weights FILE [--model NAME] [--dataset SPEC | --data DIR] [--split test|train]\n" +
        "                   [--batch-size N] [--tta none|flip|flip-shift]",
    );
    return v.help ? 0 : 2;
  }
  const tta = ttaFlag(v) ?? "none";
  const batchSize = num(v, "batch-size", { min: 1, integer: true }) ?? 128;
  const { model, mean, std, classes } = await loadForInference(
    v.weights as string,
    v.model as string | undefined,
  );
  const c = model.config;
  const spec = v.data ? `folder:${v.data}` : (v.dataset as string | undefined) ?? "synthetic:gray28";
  const data: Dataset = await loadDataset(spec, { size: c.imgHeight, channels: c.inChannels });
  if (data.channels !== c.inChannels || data.height !== c.imgHeight || data.width !== c.imgWidth) {
    throw new TypeError(
      `${spec}: images are ${data.channels}×${data.height}×${data.width}, the model expects ` +
        `${c.inChannels}×${c.imgHeight}×${c.imgWidth}`,
    );
  }
  const split = v.split === "train" ? data.train : data.test;
  const r = await evaluate(model, { ...data, mean, std, classes: data.classes }, split, batchSize, { tta });
  const what = `${v.split ?? "test"}, ${r.count} images${tta === "none" ? "" : `, ${tta} TTA`}`;
  console.log(
    `${spec} (${what}): top-1 ${(r.top1 * 100).toFixed(2)}%  top-5 ${(r.top5 * 100).toFixed(2)}%  ` +
      `loss ${r.loss.toFixed(4)}`,
  );
  console.log(
    confusionMatrixText(data.classes.length === classes.length ? data.classes : classes, r.confusion),
  );
  model.destroy();
  return 0;
}

async function convert(args: string[]): Promise<number> {
  const { values: v, positionals } = parse(args, {
    model: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, true);
  if (v.help || positionals.length !== 2) {
    console.log("usage: cli.ts convert [--model NAME] IN.pth OUT.safetensors");
    return v.help ? 0 : 2;
  }
  const [input, output] = positionals;
  const file = parseWeights(await Deno.readFile(input), input);
  if (v.model) {
    // Validate against the architecture before writing anything.
    const fc = file.tensors.get("classifier.fc.weight");
    const model = await CompactTransformer.create(v.model as string, fc ? { numClasses: fc.shape[0] } : {});
    await model.loadWeights(file.tensors, { name: input });
    model.destroy();
  }
  await writeFileAtomic(output, serializeSafetensors(file.tensors, file.metadata));
  console.log(`${input} → ${output}: ${file.tensors.size} tensors`);
  return 0;
}

async function bench(args: string[]): Promise<number> {
  const { values: v } = parse(args, {
    model: { type: "string" },
    "img-size": { type: "string" },
    channels: { type: "string" },
    "batch-size": { type: "string" },
    repeats: { type: "string" },
    "train-steps": { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (v.help) {
    console.log(
      "usage: cli.ts bench [--model NAME] [--img-size N] [--channels C] [--batch-size N] [--repeats N]\n" +
        "                    [--train-steps N (0: inference only)]",
    );
    return 0;
  }
  const name = (v.model as string | undefined) ?? "cct_2_3x2_32";
  const size = num(v, "img-size", { min: 4, integer: true });
  const channels = num(v, "channels", { min: 1, integer: true });
  const r = await benchmarkModel(name, {
    imgSize: size,
    inChannels: channels,
    batch: num(v, "batch-size", { min: 1, integer: true }) ?? 128,
    repeats: num(v, "repeats", { min: 1, integer: true }),
    trainSteps: num(v, "train-steps", { min: 0, integer: true }),
  });
  console.log(JSON.stringify(r, null, 2));
  return 0;
}

async function info(): Promise<number> {
  const gpu = await getGpu();
  const l = gpu.device.limits;
  console.log(`adapter   ${gpu.description}${gpu.isFallbackAdapter ? " (software fallback)" : ""}`);
  console.log(`backend   ${gpu.backend}`);
  console.log(
    `features  subgroups ${gpu.hasSubgroups ? `yes (width ${gpu.subgroupSize || "varies"})` : "no"}, ` +
      `shader-f16 ${gpu.hasF16 ? "yes" : "no"}, timestamps ${gpu.hasTimestamps ? "yes" : "no"}`,
  );
  console.log(
    `limits    storage binding ${mib(l.maxStorageBufferBindingSize)}, buffer ${mib(l.maxBufferSize)}, ` +
      `${l.maxStorageBuffersPerShaderStage} storage buffers per stage, ` +
      `${l.maxComputeWorkgroupStorageSize / 1024} KiB workgroup memory`,
  );
  console.log();
  console.log(zooTable());
  return 0;
}

function mib(bytes: number): string {
  return `${Math.round(bytes / 2 ** 20)} MiB`;
}

/** The model zoo as a table: name, parameters, forward MACs per image, tokens, classes, input. */
export function zooTable(): string {
  const rows = [["model", "params", "GMACs", "tokens", "classes", "input"]];
  for (const name of modelNames()) {
    const c = modelConfig(name);
    rows.push([
      name,
      parameterCount(c).toLocaleString("en-US"),
      (forwardMacs(c).total / 1e9).toFixed(3),
      String(sequenceLength(c)),
      String(c.numClasses),
      `${c.inChannels}×${c.imgHeight}×${c.imgWidth}`,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join("  "))
    .join("\n");
}

/** Runs one command; returns the exit code. Errors are printed as one line naming the problem. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case "train":
        return await train(rest);
      case "eval":
        return await evalCommand(rest);
      case "predict":
        return await predict(rest);
      case "convert":
        return await convert(rest);
      case "bench":
        return await bench(rest);
      case "info":
        return await info();
      case undefined:
      case "help":
      case "-h":
      case "--help":
        console.log(HELP);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(
        `error: ${e.message}\nrun 'cli.ts ${command && command !== "help" ? `${command} ` : ""}--help'`,
      );
      return 2;
    }
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
