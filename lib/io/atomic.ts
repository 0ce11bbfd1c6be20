/**
 * Crash-safe file replacement: write a sibling temporary file, flush it to disk, then rename it over the target.
 * A rename within one folder is atomic on POSIX file systems, so a reader (or a crash) sees either the old file
 * or the complete new one, never a torn mix.
 *
 * @module
 */

function randomSuffix(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Writes `bytes` to `path` atomically: they go to `path + ".tmp-<random>"` in the same folder, are fsynced, and
 * the temporary file is renamed over `path`. If anything fails the temporary file is removed and `path` keeps its
 * old content. (The folder itself is not fsynced: that would need read access to it; the rename is still atomic,
 * only its durability across a power cut is left to the file system.)
 *
 * @param path the file to create or replace
 * @param bytes its complete new content
 * @example
 * ```ts
 * import { writeFileAtomic } from "./atomic.ts";
 * const path = await Deno.makeTempFile();
 * await writeFileAtomic(path, new TextEncoder().encode("hello"));
 * ```
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${randomSuffix()}`;
  const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
  try {
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync();
  } catch (error) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw error;
  }
  file.close();
  try {
    await Deno.rename(tmp, path);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw error;
  }
}
