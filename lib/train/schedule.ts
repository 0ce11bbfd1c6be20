/**
 * The learning-rate schedule of the paper's recipe (timm's CosineLRScheduler as the official configs use it):
 * linear warm-up from `warmupLr`, cosine decay from `lr` to `minLr`, then `cooldownEpochs` at `minLr`.
 * Evaluated per optimizer step (t in fractional epochs) for a smooth curve on short runs.
 */

/** Schedule settings, in epochs. */
export interface ScheduleOptions {
  lr: number;
  minLr: number;
  epochs: number;
  warmupEpochs: number;
  warmupLr: number;
  cooldownEpochs: number;
}

/** The learning rate at fractional epoch `t` (0 ≤ t ≤ epochs). */
export function learningRate(o: ScheduleOptions, t: number): number {
  if (t < o.warmupEpochs) return o.warmupLr + ((o.lr - o.warmupLr) * t) / o.warmupEpochs;
  const decayEpochs = Math.max(0, o.epochs - o.cooldownEpochs - o.warmupEpochs);
  const u = t - o.warmupEpochs;
  if (decayEpochs === 0 || u >= decayEpochs) return o.minLr;
  return o.minLr + 0.5 * (o.lr - o.minLr) * (1 + Math.cos((Math.PI * u) / decayEpochs));
}
