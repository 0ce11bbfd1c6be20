/**
 * Kernel selection by measurement for one model: the matmul shapes of its training step are timed with every
 * variant the adapter offers and the winners remembered (in memory, and in a JSON file when the caller gives a
 * path it may write). Later plan builds pick the winners; without tuning each shape uses a static default.
 */
import { loadTuneTable, lookupChoice, saveTuneTable } from "../gpu/autotune.ts";
import type { Gpu } from "../gpu/device.ts";
import { type MatmulShape, matmulShapeClass, tuneMatmul } from "../kernels/matmul.ts";
import { type ModelConfig, sequenceLength } from "./config.ts";

/** The linear-layer matmuls of a training step at `batch`: forward, input gradient and weight gradient. */
export function matmulShapes(c: ModelConfig, batch: number): MatmulShape[] {
  const rows = batch * sequenceLength(c), d = c.dim, r = c.dim * c.mlpRatio;
  const layers: [number, number, number][] = [[rows, d, 3 * d], [rows, d, d], [rows, d, r], [rows, r, d], [
    batch,
    d,
    c.numClasses,
  ]];
  return layers.flatMap(([m, inF, outF]): MatmulShape[] => [
    { m, n: outF, k: inF, transB: true }, // y = x·Wᵀ
    { m, n: inF, k: outF }, // dx = dy·W
    { m: outF, n: inF, k: m, transA: true }, // dW += dyᵀ·x
  ]);
}

/**
 * Tunes the model's matmuls at `batch`. With `file`, winners already recorded there are reused (nothing is timed
 * again) and new ones are written back.
 *
 * @returns The number of shape classes timed in this call.
 */
export async function tuneModel(
  gpu: Gpu,
  config: ModelConfig,
  batch: number,
  { file }: { file?: string } = {},
): Promise<number> {
  if (file) await loadTuneTable(file);
  const untimed = matmulShapes(config, batch).filter((s) =>
    !lookupChoice(gpu, "matmul", matmulShapeClass(s))
  );
  if (untimed.length === 0) return 0;
  const winners = await tuneMatmul(gpu, untimed);
  if (file) await saveTuneTable(file);
  return Object.keys(winners).length;
}
