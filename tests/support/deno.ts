/** The deno binary a test may run: its own executable if allowed, else `deno` from PATH (`--allow-run=deno`). */
export function denoCommand(test: string): string {
  for (const command of [Deno.execPath(), "deno"]) {
    if (Deno.permissions.querySync({ name: "run", command }).state === "granted") return command;
  }
  throw new Error(`${test} needs --allow-run=deno (or the deno binary's path)`);
}
