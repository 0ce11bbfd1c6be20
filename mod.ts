/**
 * Compact Transformers — ViT-Lite, CVT and CCT from *Escaping the Big Data Paradigm with Compact Transformers*
 * (Hassani et al., arXiv 2104.05704) — trained and run in WGSL compute kernels on Deno's built-in WebGPU.
 * Weights use the official PyTorch state-dict names in safetensors; official `.pth` checkpoints load directly.
 *
 * @example Classify a batch with a registered model
 * ```ts
 * import { CompactTransformer } from "@compact-transformers/cct";
 *
 * const model = await CompactTransformer.create("cct_2_3x2_32");
 * // await model.loadWeights("cct_2_3x2_32.safetensors");
 * const logits = await model.forward(new Float32Array(2 * 3 * 32 * 32), [2, 3, 32, 32]);
 * console.log(logits.length); // 2 images × 10 classes
 * ```
 *
 * @example Train on the embedded synthetic data set
 * ```ts
 * import { CompactTransformer, loadDataset, Trainer } from "@compact-transformers/cct";
 *
 * const data = await loadDataset("synthetic:gray28");
 * const model = await CompactTransformer.create("cct_2_3x2_32", {
 *   imgSize: 28,
 *   inChannels: 1,
 *   numClasses: data.classes.length,
 * });
 * const trainer = new Trainer(model, data, { epochs: 1 }, {
 *   onEpoch: (s) => console.log(`epoch ${s.epoch}: test top-1 ${s.test?.top1}`),
 * });
 * await trainer.run();
 * ```
 *
 * @module
 */

// Models
export {
  CompactTransformer,
  createModel,
  type CreateOptions,
  type LossAndGradients,
  parseWeights,
  type WeightSource,
} from "./lib/models/model.ts";
export {
  type ConvStage,
  customConfig,
  type Family,
  forwardMacs,
  type InitKind,
  type ModelConfig,
  modelConfig,
  modelNames,
  type ModelOptions,
  parameterCount,
  type ParameterSpec,
  parameterSpecs,
  type PositionalEmbedding,
  sequenceLength,
  tokenCount,
  tokenizerGeometry,
} from "./lib/models/config.ts";
export {
  type HostTensor,
  type MatchOptions,
  type MatchReport,
  matchStateDict,
} from "./lib/models/weights.ts";
export { Activations, type PassContext, type Rates, type TensorTable } from "./lib/models/network.ts";
export { matmulShapes, tuneModel } from "./lib/models/tune.ts";

// Training
export {
  defaultTrainOptions,
  type EpochSummary,
  type EvalResult,
  evaluate,
  modelEmaDecayAt,
  NonFiniteLossError,
  type ProgressMetrics,
  type TrainCallbacks,
  Trainer,
  type TrainOptions,
  type TrainState,
} from "./lib/train/trainer.ts";
export { learningRate, type ScheduleOptions } from "./lib/train/schedule.ts";
export { TEST_TIME_AUGMENTATIONS, type TestTimeAugmentation, ttaInputs, ttaLogits } from "./lib/train/tta.ts";
export {
  type CheckpointInfo,
  checkpointInfo,
  loadTrainingState,
  saveTrainingState,
  saveWeightsCheckpoint,
  type TrainingState,
} from "./lib/train/checkpoint.ts";
export { benchmarkModel, type ModelBenchmark } from "./lib/benchmark.ts";

// Data
export { loadDataset, type LoadOptions } from "./lib/data/load.ts";
export {
  type Batch,
  batches,
  type BatchOptions,
  type Dataset,
  type FileEntry,
  type FileSource,
  type Split,
} from "./lib/data/dataset.ts";
export { createSynthetic, type SyntheticOptions } from "./lib/data/synthetic.ts";

// Files
export {
  parseSafetensors,
  readSafetensorsFile,
  type Safetensors,
  type SafetensorsTensor,
  serializeSafetensors,
  type TensorData,
  type TensorToWrite,
  writeSafetensorsFile,
} from "./lib/io/safetensors.ts";
export { parsePth, type PthTensor, readPthFile, UnsafePickleError } from "./lib/io/pth.ts";
export {
  type DecodedImage,
  decodeImage,
  type ModelInputSpec,
  readImage,
  toModelInput,
  toUint8CHW,
} from "./lib/io/image.ts";

// The GPU engine, for custom layers
export { getGpu, type Gpu } from "./lib/gpu/device.ts";
export { type Binding, Plan, UniformBlock, type UniformField } from "./lib/gpu/plan.ts";
export {
  Arena,
  BufferTable,
  createTensor,
  readTensor,
  Tensor,
  uploadTensor,
  writeTensor,
} from "./lib/gpu/tensor.ts";
export {
  linearBackward,
  linearForward,
  matmul,
  type MatmulActivation,
  type MatmulBatch,
  type MatmulOptions,
  type MatmulShape,
  type MatmulVariant,
  tuneMatmul,
} from "./lib/kernels/matmul.ts";
