/**
 * Command-line interface: `info` (for now; `train`, `eval`, `predict`, `bench` follow).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { getGpu } from "./lib/gpu/device.ts";

async function info(): Promise<void> {
  const gpu = await getGpu();
  const l = gpu.device.limits;
  console.log(`adapter   ${gpu.description}${gpu.isFallbackAdapter ? " (software fallback)" : ""}`);
  console.log(`backend   ${gpu.backend}`);
  console.log(
    `features  subgroups=${gpu.hasSubgroups} (width ${gpu.subgroupSize}) f16=${gpu.hasF16} ` +
      `timestamps=${gpu.hasTimestamps}`,
  );
  console.log(
    `limits    storage binding ${l.maxStorageBufferBindingSize} B, buffer ${l.maxBufferSize} B, ` +
      `${l.maxStorageBuffersPerShaderStage} storage buffers/stage, ${l.maxComputeWorkgroupStorageSize} B workgroup memory`,
  );
}

async function main(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, strict: false });
  const command = positionals[0];
  switch (command) {
    case "info":
      await info();
      return 0;
    default:
      console.error(`usage: cli.ts info`);
      return 2;
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
