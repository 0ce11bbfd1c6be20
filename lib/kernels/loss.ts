/** Typed wrappers of the loss kernels (`shaders/loss.ts`). Arguments: outputs, inputs, then options. */
import type { Plan } from "../gpu/plan.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { accumulateMetricsWgsl, CROSS_ENTROPY_WORKGROUP, crossEntropyWgsl } from "../../shaders/loss.ts";
import { expectElements } from "./_check.ts";

/** Slots of the metrics buffer filled by {@link accumulateMetrics}. */
export const METRICS = { lossSum: 0, correct: 1, count: 2 } as const;
/** Smallest size of a metrics buffer. */
export const METRICS_SIZE = 3;

/** Mean loss, top-1 accuracy and sample count from a metrics buffer read back to the host (NaN when empty). */
export function summarizeMetrics(
  values: ArrayLike<number>,
): { meanLoss: number; accuracy: number; count: number } {
  const count = values[METRICS.count];
  return {
    meanLoss: count > 0 ? values[METRICS.lossSum] / count : NaN,
    accuracy: count > 0 ? values[METRICS.correct] / count : NaN,
    count,
  };
}

/** Options of {@link crossEntropyForwardBackward}. */
export interface CrossEntropyOptions {
  /** Rows of logits (samples). */
  batch: number;
  /** Columns of logits. */
  classes: number;
  /** Label smoothing ε: target = (1−ε)·target + ε/C, as PyTorch's CrossEntropyLoss(label_smoothing). */
  smoothing?: number;
  /** `targets` are float [B, C] probabilities (mixup/cutmix) instead of int32 labels [B]. */
  soft?: boolean;
  /** Factor on dlogits; 1/batch (the default) is the gradient of the mean loss. */
  gradScale?: number;
}

function checkDims(kernel: string, batch: number, classes: number): void {
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`${kernel}: batch ${batch} is not a positive integer`);
  }
  if (!Number.isInteger(classes) || classes < 1) {
    throw new RangeError(`${kernel}: classes ${classes} is not a positive integer`);
  }
}

/**
 * Fused log-softmax cross-entropy, forward and backward in one kernel: losses[b] = −Σ_c t'_c·log softmax(x_b)_c and
 * dlogits = (softmax − t')·gradScale, with t' = (1−ε)·t + ε/C. Hard int32 labels outside [0, C) give loss 0 and a
 * zero gradient. With unnormalised soft targets dlogits is softmax·Σt' − t' (the exact gradient).
 *
 * @param losses f32 [batch], per-sample loss (sum it, or let {@link accumulateMetrics} do so, for the mean)
 * @param dlogits f32 [batch, classes], overwritten
 * @param logits f32 [batch, classes]
 * @param targets int32 labels [batch], or f32 probabilities [batch, classes] when `soft`
 */
export function crossEntropyForwardBackward(
  plan: Plan,
  losses: Tensor,
  dlogits: Tensor,
  logits: Tensor,
  targets: Tensor,
  { batch, classes, smoothing = 0, soft = false, gradScale = 1 / batch }: CrossEntropyOptions,
): void {
  const name = "crossEntropyForwardBackward";
  checkDims(name, batch, classes);
  if (!(smoothing >= 0 && smoothing <= 1)) {
    throw new RangeError(`${name}: smoothing ${smoothing} is not in [0, 1]`);
  }
  if (!Number.isFinite(gradScale)) throw new RangeError(`${name}: gradScale ${gradScale} is not finite`);
  expectElements(name, losses, batch, "losses [batch]");
  expectElements(name, dlogits, batch * classes, "dlogits [batch, classes]");
  expectElements(name, logits, batch * classes, "logits [batch, classes]");
  expectElements(
    name,
    targets,
    soft ? batch * classes : batch,
    soft ? "soft targets [batch, classes]" : "labels [batch]",
  );
  plan.dispatch(
    soft ? "crossEntropySoft" : "crossEntropy",
    crossEntropyWgsl(soft),
    [{ uniform: [batch, classes, { f32: smoothing }, { f32: gradScale }] }, losses, dlogits, logits, targets],
    Math.ceil(batch / CROSS_ENTROPY_WORKGROUP),
  );
}

/**
 * Adds this batch's Σ loss, number of correct top-1 predictions and number of counted samples into
 * `metrics[METRICS.lossSum | correct | count]` on the GPU, so the host reads them only every k steps. Hard labels
 * outside [0, C) are not counted; with `soft` targets the label is the argmax of the target row.
 *
 * @param metrics f32 [≥ 3], accumulated into (zero it at the start of an epoch)
 * @param losses f32 [batch] from {@link crossEntropyForwardBackward}
 * @param logits f32 [batch, classes]
 * @param labels int32 [batch], or f32 [batch, classes] when `soft`
 */
export function accumulateMetrics(
  plan: Plan,
  metrics: Tensor,
  losses: Tensor,
  logits: Tensor,
  labels: Tensor,
  { batch, classes, soft = false }: { batch: number; classes: number; soft?: boolean },
): void {
  const name = "accumulateMetrics";
  checkDims(name, batch, classes);
  if (metrics.size < METRICS_SIZE) {
    throw new TypeError(
      `${name}: ${metrics.label} has ${metrics.size} elements, expected at least ${METRICS_SIZE}`,
    );
  }
  expectElements(name, losses, batch, "losses [batch]");
  expectElements(name, logits, batch * classes, "logits [batch, classes]");
  expectElements(
    name,
    labels,
    soft ? batch * classes : batch,
    soft ? "soft targets [batch, classes]" : "labels [batch]",
  );
  plan.dispatch(
    soft ? "accumulateMetricsSoft" : "accumulateMetrics",
    accumulateMetricsWgsl(soft),
    [{ uniform: [batch, classes] }, metrics, losses, logits, labels],
    1,
  );
}
