/**
 * The learning-rate schedule of the paper's recipe, as timm's `CosineLRScheduler` (warmup_prefix false) and its
 * training script run it: linear warm-up from `warmupLr` to `lr` over `warmupEpochs`, a cosine from `lr` to
 * `minLr` over `epochs` measured from t = 0 (warm-up overlaps its start, as in timm), then `cooldownEpochs` more
 * at `minLr`. A run lasts `epochs + cooldownEpochs` epochs (the official CIFAR recipe: 300 + 10). Evaluated per
 * optimizer step (t in fractional epochs), which timm does per epoch; it only smooths the curve.
 */

/** Schedule settings, in epochs. */
export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warm-up. */
  lr: number;
  /** Learning rate at the end of the cosine and throughout cool-down. */
  minLr: number;
  /** Length of the cosine cycle from t = 0; the run adds `cooldownEpochs`. */
  epochs: number;
  /** Length of the linear warm-up from `warmupLr` to `lr`. */
  warmupEpochs: number;
  /** Learning rate at t = 0. */
  warmupLr: number;
  /** Epochs held at `minLr` after the cosine. */
  cooldownEpochs: number;
}

/**
 * The learning rate at fractional epoch `t` (0 ≤ t < epochs + cooldownEpochs).
 *
 * @param o The schedule.
 * @param t Time in epochs, e.g. `step / stepsPerEpoch`.
 * @returns The learning rate for the optimizer step at `t`.
 *
 * @example The official CIFAR recipe (300 epochs, 10 warm-up, then 10 cool-down)
 * ```ts
 * import { learningRate, type ScheduleOptions } from "@compact-transformers/cct";
 *
 * const schedule: ScheduleOptions = {
 *   lr: 55e-5,
 *   minLr: 1e-5,
 *   epochs: 300,
 *   warmupEpochs: 10,
 *   warmupLr: 1e-6,
 *   cooldownEpochs: 10,
 * };
 * console.log(learningRate(schedule, 5)); // ≈ 2.8e-4, warming up
 * console.log(learningRate(schedule, 150)); // ≈ 2.8e-4, half way down the cosine
 * console.log(learningRate(schedule, 305)); // 1e-5 during cool-down
 * ```
 */
export function learningRate(o: ScheduleOptions, t: number): number {
  if (t < o.warmupEpochs) return o.warmupLr + ((o.lr - o.warmupLr) * t) / o.warmupEpochs;
  if (t >= o.epochs) return o.minLr;
  return o.minLr + 0.5 * (o.lr - o.minLr) * (1 + Math.cos((Math.PI * t) / o.epochs));
}
