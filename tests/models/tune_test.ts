import { matmulShapes, tuneModel } from "../../lib/models/tune.ts";
import { modelConfig } from "../../lib/models/config.ts";
import { chooseMatmulVariant, matmulShapeClass } from "../../lib/kernels/matmul.ts";
import { clearTuneTable, lookupChoice } from "../../lib/gpu/autotune.ts";
import { assertEquals, testGpu } from "../support/check.ts";

Deno.test("tuning times a model's matmul shapes once, remembers the winners on disk and uses them", async () => {
  const gpu = await testGpu();
  const config = modelConfig("cct_2_3x2_32", { imgSize: 8, numClasses: 3 });
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tune_test_" });
  try {
    clearTuneTable();
    const file = `${dir}/tune.json`;
    const timed = await tuneModel(gpu, config, 2, { file });
    const shapes = matmulShapes(config, 2);
    assertEquals(timed, new Set(shapes.map(matmulShapeClass)).size);
    for (const s of shapes) {
      const chosen = lookupChoice(gpu, "matmul", matmulShapeClass(s));
      assertEquals(chosen !== undefined, true);
      assertEquals(chooseMatmulVariant(gpu, s), chosen);
    }
    // A new process (an emptied table) reads the winners back and times nothing.
    clearTuneTable();
    assertEquals(await tuneModel(gpu, config, 2, { file }), 0);
    assertEquals(lookupChoice(gpu, "matmul", matmulShapeClass(shapes[0])) !== undefined, true);
  } finally {
    clearTuneTable();
    await Deno.remove(dir, { recursive: true });
  }
});
