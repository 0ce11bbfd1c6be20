/**
 * The learning-rate schedule of the paper's recipe (timm's CosineLRScheduler as the official configs use it):
 * linear warm-up from `warmupLr`, cosine decay from `lr` to `minLr`, then `cooldownEpochs` at `minLr`.
 * Evaluated per optimizer step (t in fractional epochs) for a smooth curve on short runs.
 */

/** Schedule settings, in epochs. */
export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warm-up. */
  lr: number;
  /** Learning rate at the end of the cosine decay and throughout cool-down. */
  minLr: number;
  /** Total length of the run, warm-up and cool-down included. */
  epochs: number;
  /** Length of the linear warm-up from `warmupLr` to `lr`. */
  warmupEpochs: number;
  /** Learning rate at t = 0. */
  warmupLr: number;
  /** Epochs held at `minLr` after the decay. */
  cooldownEpochs: number;
}

/**
 * The learning rate at fractional epoch `t` (0 ≤ t ≤ epochs).
 *
 * @param o The schedule.
 * @param t Time in epochs, e.g. `step / stepsPerEpoch`.
 * @returns The learning rate for the optimizer step at `t`.
 *
 * @example The official CIFAR recipe (300 epochs, 10 warm-up, 10 cool-down)
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
 * const stepsPerEpoch = 391;
 * console.log(learningRate(schedule, 1234 / stepsPerEpoch)); // ≈ 1.74e-4, still warming up
 * console.log(learningRate(schedule, 295)); // 1e-5 during cool-down
 * ```
 */
export function learningRate(o: ScheduleOptions, t: number): number {
  if (t < o.warmupEpochs) return o.warmupLr + ((o.lr - o.warmupLr) * t) / o.warmupEpochs;
  const decayEpochs = Math.max(0, o.epochs - o.cooldownEpochs - o.warmupEpochs);
  const u = t - o.warmupEpochs;
  if (decayEpochs === 0 || u >= decayEpochs) return o.minLr;
  return o.minLr + 0.5 * (o.lr - o.minLr) * (1 + Math.cos((Math.PI * u) / decayEpochs));
}
