/**
 * The deno binary a test may run: its own executable if allowed, else `deno` from PATH (`--allow-run=deno`).
 *
 * @param test The test file, named in the error when neither is allowed.
 * @param alsoNeeds Other permissions the test needs, for the same message (e.g. "--allow-net=127.0.0.1").
 */
export function denoCommand(test: string, alsoNeeds = ""): string {
  for (const command of [Deno.execPath(), "deno"]) {
    if (Deno.permissions.querySync({ name: "run", command }).state === "granted") return command;
  }
  throw new Error(
    `${test} needs --allow-run=deno (or the deno binary's path)${alsoNeeds ? ` and ${alsoNeeds}` : ""}`,
  );
}
