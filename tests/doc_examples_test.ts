// Type-checks every `ts` code block in the JSDoc of mod.ts and lib/ as the standalone program a user would
// paste. `deno check --doc` cannot: it injects an import of all of a module's exports into each example, which
// this project's `noUnusedLocals` rejects (denoland/deno#26900). So the blocks are extracted, the package's name
// is pointed at mod.ts (relative imports at the documented file's folder), and all are checked in one
// `deno check` with the project's compiler options. `ts ignore` blocks (they need files) are checked too.

import assert from "node:assert/strict";
import { denoCommand } from "./support/deno.ts";

const ROOT = new URL("../", import.meta.url);
const PACKAGE = "@compact-transformers/cct";

/** One fenced `ts` block of a JSDoc comment, with where it came from. */
interface DocExample {
  file: string;
  line: number;
  code: string;
}

/** The `ts`/`typescript` fenced blocks inside the `/** … *\/` comments of a source file. */
function docExamples(file: string, source: string): DocExample[] {
  const examples: DocExample[] = [];
  const lines = source.split("\n");
  let inComment = false;
  let block: string[] | null = null;
  let blockLine = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    if (!inComment) {
      if (/^\s*\/\*\*/.test(raw) && !raw.includes("*/")) inComment = true;
      continue;
    }
    if (/\*\/\s*$/.test(raw)) {
      if (block) throw new Error(`${file}:${blockLine}: code block not closed before the comment ends`);
      inComment = false;
      continue;
    }
    const text = raw.replace(/^\s*\* ?/, "");
    if (block === null) {
      if (/^```(ts|typescript)( ignore)?\s*$/.test(text)) {
        block = [];
        blockLine = i + 1;
      }
    } else if (/^```\s*$/.test(text)) {
      examples.push({ file, line: blockLine, code: block.join("\n") + "\n" });
      block = null;
    } else {
      block.push(text);
    }
  }
  return examples;
}

async function sourceFiles(): Promise<string[]> {
  const files = ["mod.ts"];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(new URL(dir, ROOT))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.name.endsWith(".ts")) files.push(path);
    }
  };
  await walk("lib");
  return files.sort();
}

Deno.test("docExamples finds fenced ts blocks in JSDoc only, with their line numbers", () => {
  const source = [
    "// ```ts",
    "/**",
    " * Text.",
    " * ```ts",
    " * const a = 1;",
    " *   console.log(a);",
    " * ```",
    " * ```sh",
    " * ls",
    " * ```",
    " */",
    "const x = 1;",
  ].join("\n");
  assert.deepEqual(docExamples("f.ts", source), [
    { file: "f.ts", line: 4, code: "const a = 1;\n  console.log(a);\n" },
  ]);
  assert.throws(() => docExamples("g.ts", "/**\n * ```ts\n * x\n */\n"), /g\.ts:2: code block not closed/);
});

Deno.test("every JSDoc example of mod.ts and lib/ type-checks as a standalone program", async () => {
  const examples: DocExample[] = [];
  for (const file of await sourceFiles()) {
    examples.push(...docExamples(file, await Deno.readTextFile(new URL(file, ROOT))));
  }
  // Every `ts` fence in a comment is one example: a block the extractor skipped would go unchecked.
  let fences = 0;
  for (const file of await sourceFiles()) {
    fences +=
      (await Deno.readTextFile(new URL(file, ROOT))).match(/^\s*\*\s*```(ts|typescript)\b/gm)?.length ?? 0;
  }
  assert.equal(examples.length, fences, "examples extracted vs ts fences in comments");
  assert.ok(examples.length >= 40, `only ${examples.length} examples found`);

  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "doc_examples_" });
  try {
    const modUrl = new URL("mod.ts", ROOT).href;
    const origins = new Map<string, DocExample>(); // temporary file → where its example is documented
    for (const example of examples) {
      // The package's name means mod.ts; a relative import (in the docs of internal modules) means a file
      // beside the documented one.
      const base = new URL(example.file, ROOT);
      const code = example.code
        .replaceAll(`"${PACKAGE}"`, `"${modUrl}"`)
        .replace(/(from\s+)"(\.\.?\/[^"]+)"/g, (_, from, path) => `${from}"${new URL(path, base).href}"`);
      const path = `${dir}/${example.file.replaceAll("/", "_")}_line${example.line}.ts`;
      await Deno.writeTextFile(path, code);
      origins.set(new URL(`file://${path}`).href, example);
    }
    const paths = [...origins.keys()].map((url) => new URL(url).pathname);
    const config = new URL("deno.json", ROOT).pathname;
    const out = await new Deno.Command(denoCommand("tests/doc_examples_test.ts"), {
      args: ["check", "--quiet", "--config", config, ...paths],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    // deno names `file:///tmp/…/lib_x.ts_line52.ts:4:7`: point at the comment instead, lib/x.ts:56:7.
    const text = (new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr)).replace(
      /(file:\/\/\S+?\.ts):(\d+):(\d+)/g,
      (match, url: string, row: string, column: string) => {
        const origin = origins.get(url);
        return origin ? `${origin.file}:${origin.line + Number(row)}:${column}` : match;
      },
    );
    assert.ok(out.success, `deno check of ${paths.length} doc examples failed:\n${text}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
