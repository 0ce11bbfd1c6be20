import assert from "node:assert/strict";
import { confusionMatrixSvg, escapeXml, lineChart, niceTicks } from "../../lib/io/svg.ts";
import { rng } from "../support/check.ts";

/** An element of the tiny XML parser below. */
interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: (XmlElement | string)[];
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

/** Replaces entity and character references; throws on a bare `&` or an unknown entity. */
function decodeEntities(text: string, where: number): string {
  return text.replace(/&([^;&\s]*);?/g, (match, body: string) => {
    if (!match.endsWith(";")) throw new SyntaxError(`bare & at ${where}`);
    if (body in ENTITIES) return ENTITIES[body];
    const m = /^#(x[0-9a-fA-F]+|[0-9]+)$/.exec(body);
    if (!m) throw new SyntaxError(`unknown entity &${body}; at ${where}`);
    return String.fromCodePoint(m[1][0] === "x" ? parseInt(m[1].slice(1), 16) : parseInt(m[1], 10));
  });
}

/**
 * A strict little XML 1.0 well-formedness checker and parser (enough for generated SVG): one root element, every
 * tag closed in order, attributes quoted and unique, text and attribute values with no raw `<` and only valid
 * references, no characters XML forbids. Returns the root; throws SyntaxError saying where it broke.
 */
function parseXml(xml: string): XmlElement {
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/.test(xml)) {
    throw new SyntaxError("character not allowed in XML");
  }
  let i = 0;
  const nameRe = /[A-Za-z_:][-A-Za-z0-9_:.]*/y;
  const readName = (): string => {
    nameRe.lastIndex = i;
    const m = nameRe.exec(xml);
    if (!m) throw new SyntaxError(`expected a name at ${i}`);
    i += m[0].length;
    return m[0];
  };
  const skipSpace = () => {
    while (i < xml.length && " \t\r\n".includes(xml[i])) i++;
  };
  if (xml.startsWith("<?xml")) {
    const end = xml.indexOf("?>");
    if (end < 0) throw new SyntaxError("unterminated XML declaration");
    i = end + 2;
  }
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  while (i < xml.length) {
    if (xml.startsWith("<!--", i)) {
      const end = xml.indexOf("-->", i + 4);
      if (end < 0) throw new SyntaxError(`unterminated comment at ${i}`);
      i = end + 3;
    } else if (xml.startsWith("</", i)) {
      i += 2;
      const name = readName();
      skipSpace();
      if (xml[i] !== ">") throw new SyntaxError(`expected > at ${i}`);
      i++;
      const open = stack.pop();
      if (!open || open.name !== name) throw new SyntaxError(`</${name}> closes <${open?.name}> at ${i}`);
    } else if (xml[i] === "<") {
      i++;
      const element: XmlElement = { name: readName(), attrs: {}, children: [] };
      if (root && stack.length === 0) throw new SyntaxError(`second root element <${element.name}>`);
      root ??= element;
      stack[stack.length - 1]?.children.push(element);
      for (;;) {
        const before = i;
        skipSpace();
        if (xml.startsWith("/>", i)) {
          i += 2;
          break;
        }
        if (xml[i] === ">") {
          i++;
          stack.push(element);
          break;
        }
        if (i === before) throw new SyntaxError(`expected space before attribute at ${i}`);
        const attr = readName();
        if (attr in element.attrs) throw new SyntaxError(`duplicate attribute ${attr} at ${i}`);
        skipSpace();
        if (xml[i] !== "=") throw new SyntaxError(`expected = at ${i}`);
        i++;
        skipSpace();
        const quote = xml[i];
        if (quote !== '"' && quote !== "'") throw new SyntaxError(`unquoted attribute ${attr} at ${i}`);
        const end = xml.indexOf(quote, i + 1);
        if (end < 0) throw new SyntaxError(`unterminated attribute ${attr}`);
        const raw = xml.slice(i + 1, end);
        if (raw.includes("<")) throw new SyntaxError(`< in attribute ${attr} at ${i}`);
        element.attrs[attr] = decodeEntities(raw, i);
        i = end + 1;
      }
    } else {
      const end = xml.indexOf("<", i);
      const raw = xml.slice(i, end < 0 ? xml.length : end);
      if (stack.length === 0) {
        if (raw.trim()) throw new SyntaxError(`text outside the root element at ${i}`);
      } else {
        stack[stack.length - 1].children.push(decodeEntities(raw, i));
      }
      i = end < 0 ? xml.length : end;
    }
  }
  if (stack.length) throw new SyntaxError(`<${stack[stack.length - 1].name}> never closed`);
  if (!root) throw new SyntaxError("no root element");
  return root;
}

/** Every element of a tree, depth first. */
function elements(root: XmlElement): XmlElement[] {
  const out: XmlElement[] = [root];
  for (const c of root.children) if (typeof c !== "string") out.push(...elements(c));
  return out;
}

/** The text content of an element. */
function textOf(e: XmlElement): string {
  return e.children.map((c) => typeof c === "string" ? c : textOf(c)).join("");
}

/** The text of every `<text>` element. */
function texts(root: XmlElement): string[] {
  return elements(root).filter((e) => e.name === "text").map(textOf);
}

/** Parses an SVG and checks the frame every document must have. */
function parseSvg(svg: string, title: string): XmlElement {
  const root = parseXml(svg);
  assert.equal(root.name, "svg");
  assert.equal(root.attrs.xmlns, "http://www.w3.org/2000/svg");
  assert.equal(root.attrs.version, "1.1");
  assert.match(root.attrs.viewBox, /^0 0 \d+ \d+$/);
  assert.match(root.attrs["font-family"], /system-ui/);
  const first = root.children.find((c) => typeof c !== "string") as XmlElement;
  assert.equal(first.name, "title", "the accessible title comes first");
  assert.equal(textOf(first), title);
  assert.ok(!/NaN|Infinity|undefined/.test(svg), "no NaN / Infinity / undefined leaks into the document");
  return root;
}

/** Whether `step` is 1, 2 or 5 × 10^k. */
function isNiceStep(step: number): boolean {
  const mantissa = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
  return [1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-9);
}

Deno.test("the test's XML checker rejects broken documents and accepts a well-formed one", () => {
  for (
    const bad of [
      "<a><b></a></b>",
      "<a>x & y</a>",
      "<a>1 < 2</a>",
      '<a b="1" b="2"/>',
      "<a b=1/>",
      "<a>",
      "<a/><b/>",
      "<a>&bogus;</a>",
      "<a>\u0001</a>",
    ]
  ) {
    assert.throws(() => parseXml(bad), SyntaxError, bad);
  }
  const root = parseXml(`<?xml version="1.0"?><a x="&lt;&amp;&#65;"><!-- c --><b/>t&gt;</a>`);
  assert.deepEqual(root, {
    name: "a",
    attrs: { x: "<&A" },
    children: [{ name: "b", attrs: {}, children: [] }, "t>"],
  });
});

Deno.test("escapeXml escapes markup characters and drops characters XML forbids", () => {
  assert.equal(escapeXml(`a<b & "c" 'd'>`), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;");
  assert.equal(escapeXml("tab\there\u0000\u0007\ufffe ok ü 🙂"), "tab\there ok ü 🙂");
  assert.equal(escapeXml("lone \ud800 surrogate"), "lone  surrogate");
});

Deno.test("niceTicks uses 1/2/5 steps, covers the range and prints exactly on seeded random ranges", () => {
  const u = rng(7);
  for (let trial = 0; trial < 500; trial++) {
    const scale = 10 ** Math.floor(u() * 12 - 6);
    const a = (u() * 2 - 1) * scale, b = a + u() * scale * (u() < 0.1 ? 1e-3 : 3);
    const t = niceTicks(a, b);
    assert.ok(isNiceStep(t.step), `step ${t.step} for [${a}, ${b}]`);
    assert.ok(t.min <= a && t.max >= b, `[${t.min}, ${t.max}] covers [${a}, ${b}]`);
    assert.ok(t.ticks.length >= 3 && t.ticks.length <= 12, `${t.ticks.length} ticks for [${a}, ${b}]`);
    for (const [k, v] of t.ticks.entries()) {
      assert.ok(Math.abs(v / t.step - Math.round(v / t.step)) < 1e-6, `${v} is a multiple of ${t.step}`);
      if (k) assert.ok(Math.abs(v - t.ticks[k - 1] - t.step) <= t.step * 1e-6, "evenly spaced");
    }
  }
  assert.deepEqual(niceTicks(0.13, 2.31).ticks, [0, 0.5, 1, 1.5, 2, 2.5]);
  assert.deepEqual(niceTicks(0, 20).ticks, [0, 5, 10, 15, 20]);
  assert.deepEqual(niceTicks(0.1, 0.7).ticks, [0, 0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(niceTicks(0.1, 0.7, 10).ticks, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
  assert.deepEqual(niceTicks(5, 5).ticks, [4.4, 4.6, 4.8, 5, 5.2, 5.4, 5.6]);
  assert.deepEqual(niceTicks(0, 0).ticks, [-1, -0.5, 0, 0.5, 1]);
  assert.deepEqual(niceTicks(NaN, Infinity).ticks, [0, 0.2, 0.4, 0.6, 0.8, 1]);
});

/** Loss falling over 20 epochs reported 10 times per epoch, test loss and accuracies once per epoch. */
function trainingSeries() {
  const train: [number, number][] = [], test: [number, number][] = [];
  const acc: [number, number][] = [], top1: [number, number][] = [];
  for (let i = 1; i <= 200; i++) train.push([i / 10, 2.3 * Math.exp(-i / 50) + 0.3]);
  for (let e = 1; e <= 20; e++) {
    test.push([e, 2.2 * Math.exp(-e / 6) + 0.4]);
    acc.push([e, 1 - 0.9 * Math.exp(-e / 5)]);
    top1.push([e, 0.95 - 0.85 * Math.exp(-e / 6)]);
  }
  return [
    { name: "train loss", points: train },
    { name: "test loss", points: test },
    { name: "train accuracy", points: acc, axis: "right" as const },
    { name: "test top-1", points: top1, axis: "right" as const },
  ];
}

Deno.test("lineChart draws loss and accuracy curves as well-formed SVG with legend and nice ticks", () => {
  const svg = lineChart({
    title: "CCT-7/3x1 on CIFAR-10",
    xLabel: "epoch",
    yLabel: "loss",
    y2Label: "accuracy",
    series: trainingSeries(),
  });
  const root = parseSvg(svg, "CCT-7/3x1 on CIFAR-10");
  assert.equal(root.attrs.viewBox, "0 0 720 400");
  const labels = texts(root);
  for (
    const name of ["train loss", "test loss", "train accuracy", "test top-1", "epoch", "loss", "accuracy"]
  ) {
    assert.ok(labels.includes(name), `text "${name}" is drawn`);
  }
  for (const x of ["0", "5", "10", "15", "20"]) assert.ok(labels.includes(x), `x tick ${x}`);
  for (const y of ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5", "3.0"]) {
    assert.ok(labels.includes(y), `loss tick ${y}`);
  }
  // Accuracy fractions are labelled as percentages on the right axis, within 0–100 %.
  const percents = labels.filter((t) => t.endsWith("%")).map((t) => Number(t.slice(0, -1)));
  assert.deepEqual(percents, [20, 40, 60, 80, 100]);
  // Every tick label is a short plain number: no floating-point noise such as 0.30000000000000004.
  for (const t of labels) {
    if (/^[-\d.]+%?$/.test(t)) assert.match(t, /^-?\d{1,4}(\.\d{1,3})?%?$/);
  }
  const paths = elements(root).filter((e) => e.name === "path");
  assert.equal(paths.length, 4, "one path per series");
  assert.equal(paths.filter((p) => p.attrs["stroke-dasharray"]).length, 2, "right-axis series are dashed");
  // Per-epoch series (20 points) get markers; the 200-point per-step series does not.
  assert.equal(elements(root).filter((e) => e.name === "circle").length, 60);
  // Every path coordinate lies inside the canvas.
  for (const p of paths) {
    for (const [, x, y] of p.attrs.d.matchAll(/[ML](-?[\d.]+) (-?[\d.]+)/g)) {
      assert.ok(+x >= 0 && +x <= 720 && +y >= 0 && +y <= 400, `point ${x},${y} inside`);
    }
  }
  assert.equal(
    lineChart({ title: "t", xLabel: "epoch", series: trainingSeries() }),
    lineChart({
      title: "t",
      xLabel: "epoch",
      series: trainingSeries(),
    }),
    "deterministic",
  );
});

Deno.test("lineChart labels a 0–100 right axis in percent and a plain right axis as numbers", () => {
  const percent = texts(parseSvg(
    lineChart({
      title: "p",
      xLabel: "epoch",
      series: [{ name: "acc", axis: "right", points: [[1, 40], [2, 93]] }],
    }),
    "p",
  ));
  assert.ok(percent.includes("100%") && percent.includes("40%"), percent.join(","));
  const plain = texts(parseSvg(
    lineChart({
      title: "q",
      xLabel: "epoch",
      series: [{ name: "lr", axis: "right", points: [[1, 300], [2, 500]] }],
    }),
    "q",
  ));
  assert.ok(plain.includes("300") && plain.includes("500") && !plain.some((t) => t.endsWith("%")));
});

Deno.test("lineChart ends the x axis at the last epoch with about 8 nice intervals", () => {
  const points: [number, number][] = Array.from({ length: 12 }, (_, i) => [i + 1, 1 / (i + 1)]);
  const root = parseSvg(lineChart({ title: "x", xLabel: "epoch", series: [{ name: "loss", points }] }), "x");
  const bottom = elements(root).filter((e) => e.name === "text" && e.attrs["text-anchor"] === "middle");
  const xTicks = bottom.map(textOf).filter((t) => /^\d+$/.test(t));
  assert.deepEqual(xTicks, ["0", "2", "4", "6", "8", "10", "12"]);
  const frame = elements(root).find((e) => e.name === "rect" && e.attrs.fill === "none")!;
  const right = +frame.attrs.x + +frame.attrs.width;
  const [path] = elements(root).filter((e) => e.name === "path");
  const lastX = Number(path.attrs.d.split("L").at(-1)!.split(" ")[0]);
  assert.ok(Math.abs(lastX - right) < 0.01, "the last point sits on the right edge");
});

Deno.test("lineChart draws a single point as a dot and skips NaN and Infinity without crashing", () => {
  const one = parseSvg(
    lineChart({ title: "one", xLabel: "epoch", series: [{ name: "test top-1", points: [[1, 0.5]] }] }),
    "one",
  );
  assert.equal(elements(one).filter((e) => e.name === "path").length, 0);
  assert.equal(elements(one).filter((e) => e.name === "circle").length, 1);

  const gaps = parseSvg(
    lineChart({
      title: "gaps",
      xLabel: "epoch",
      series: [{
        name: "loss",
        points: [[0, 1], [1, 2], [2, NaN], [3, 3], [3.5, 2], [Infinity, 1], [4, 4], [5, -Infinity], [6, 2]],
      }],
    }),
    "gaps",
  );
  const [path] = elements(gaps).filter((e) => e.name === "path");
  assert.equal(path.attrs.d.match(/M/g)?.length, 2, "the line breaks at non-finite points");
  const circles = elements(gaps).filter((e) => e.name === "circle");
  assert.equal(circles.length, 6, "sparse series get a marker per finite point");
  assert.ok(texts(gaps).includes("6"), "the x axis covers the last finite point");

  const allBad = parseSvg(
    lineChart({
      title: "bad",
      xLabel: "epoch",
      series: [{ name: "diverged", points: [[1, NaN], [2, Infinity]] }],
    }),
    "bad",
  );
  assert.ok(texts(allBad).includes("no data") && texts(allBad).includes("diverged"));
});

Deno.test("lineChart renders an empty chart, empty series and a flat line", () => {
  const empty = parseSvg(lineChart({ title: "empty", xLabel: "epoch", series: [] }), "empty");
  assert.ok(texts(empty).includes("no data"));
  const blank = parseSvg(
    lineChart({ title: "blank", xLabel: "epoch", series: [{ name: "nothing yet", points: [] }] }),
    "blank",
  );
  assert.ok(texts(blank).includes("nothing yet"), "an empty series still has its legend entry");
  const flat = parseSvg(
    lineChart({
      title: "flat",
      xLabel: "epoch",
      series: [{ name: "same", points: [[1, 2], [2, 2], [3, 2]] }],
    }),
    "flat",
  );
  const ys = texts(flat).filter((t) => /^\d/.test(t)).map(Number);
  assert.ok(
    ys.includes(2) && ys.some((v) => v < 2) && ys.some((v) => v > 2),
    "a flat line sits inside its axis",
  );
});

Deno.test("lineChart escapes titles, labels, series names and colours", () => {
  const title = `loss <script>alert("x")</script> & 'more'`;
  const svg = lineChart({
    title,
    xLabel: "epoch <x>",
    yLabel: "a&b",
    series: [{ name: "</text><evil>", color: `red" onload="x`, points: [[0, 1], [1, 2]] }],
  });
  const root = parseSvg(svg, title);
  assert.ok(!elements(root).some((e) => e.name === "script" || e.name === "evil"));
  assert.ok(texts(root).includes("</text><evil>") && texts(root).includes("epoch <x>"));
  assert.ok(!elements(root).some((e) => "onload" in e.attrs));
  assert.ok(elements(root).some((e) => e.attrs.stroke === `red" onload="x`));
});

Deno.test("lineChart lays out a legend with many long series names on several rows inside the canvas", () => {
  const series = Array.from({ length: 12 }, (_, i) => ({
    name: `a rather long series name number ${i}`,
    points: [[0, i], [1, i + 1]] as [number, number][],
  }));
  const root = parseSvg(lineChart({ title: "many", xLabel: "epoch", series }), "many");
  const legend = elements(root).filter((e) => e.name === "text" && textOf(e).startsWith("a rather"));
  assert.equal(legend.length, 12);
  const rows = new Set(legend.map((e) => e.attrs.y));
  assert.ok(rows.size > 1, "wrapped onto several rows");
  for (const e of legend) assert.ok(+e.attrs.x + textOf(e).length * 7.2 <= 720, "legend text fits the width");
});

const CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

Deno.test("confusionMatrixSvg draws a heatmap with counts, class names and a row-normalised colour", () => {
  const matrix = CIFAR.map((_, i) => CIFAR.map((_, j) => i === j ? 800 + i : (i * 7 + j * 3) % 11));
  // A rare class: 2 samples with the same shares as "airplane"'s diagonal would not have, to check normalising.
  matrix[3] = CIFAR.map((_, j) => j === 3 ? 2 : 0);
  matrix[4] = CIFAR.map((_, j) => j === 4 ? 900 : 0);
  const svg = confusionMatrixSvg({ title: "test confusion", classes: CIFAR, matrix });
  const root = parseSvg(svg, "test confusion");
  const labels = texts(root);
  for (const c of CIFAR) assert.ok(labels.includes(c), `class ${c} labelled`);
  for (const v of [800, 801, 2, 900]) assert.ok(labels.includes(String(v)), `count ${v} shown`);
  assert.ok(labels.includes("true label") && labels.includes("predicted label"));
  const cells = elements(root).filter((e) =>
    e.name === "rect" && e.children.some((c) => typeof c !== "string")
  );
  const fillOf = (trueClass: string, predicted: string) =>
    cells.find((e) => textOf(e).startsWith(`true ${trueClass}, predicted ${predicted}:`))?.attrs.fill;
  assert.equal(fillOf("cat", "cat"), fillOf("deer", "deer"), "2 of 2 and 900 of 900 are both a full row");
  assert.equal(fillOf("cat", "cat"), "#08306b");
  assert.notEqual(fillOf("airplane", "airplane"), fillOf("cat", "cat"));
  assert.equal(fillOf("cat", "dog"), undefined, "empty cells are left to the background");
  // Square-root colour scale: a quarter of the row is half-way from white to the darkest blue.
  const quarter = parseSvg(
    confusionMatrixSvg({ title: "q", classes: ["a", "b"], matrix: [[3, 1], [0, 4]] }),
    "q",
  );
  const quarterCell = elements(quarter).find((e) =>
    e.name === "rect" && textOf(e).startsWith("true a, predicted b")
  );
  assert.equal(quarterCell?.attrs.fill, "#8498b5");
  assert.ok(elements(root).some((e) => e.name === "text" && /rotate\(-45/.test(e.attrs.transform ?? "")));
});

Deno.test("confusionMatrixSvg omits cell counts above 20 classes and handles 100 classes", () => {
  for (const k of [21, 100]) {
    const classes = Array.from({ length: k }, (_, i) => `n0${1440764 + i}_class_with_a_long_name_${i}`);
    const matrix = classes.map((_, i) => classes.map((_, j) => i === j ? 50 : (i + j) % 13 === 0 ? 3 : 0));
    const svg = confusionMatrixSvg({ title: `${k} classes`, classes, matrix });
    const root = parseSvg(svg, `${k} classes`);
    const labels = texts(root);
    assert.ok(!labels.includes("50"), "no cell counts");
    assert.ok(labels.some((t) => t.startsWith("n01440764")), "class names shown (cut short)");
    assert.ok(labels.every((t) => [...t].length <= 120));
    const [, , w, h] = root.attrs.viewBox.split(" ").map(Number);
    assert.ok(w <= 1000 && h <= 1000, `${w}×${h} stays a sensible size`);
  }
});

Deno.test("confusionMatrixSvg handles a class with no samples, one class and escapes names", () => {
  const root = parseSvg(
    confusionMatrixSvg({ title: "t", classes: ["a<b", "c&d"], matrix: [[3, 1], [0, 0]] }),
    "t",
  );
  assert.ok(texts(root).includes("a<b") && texts(root).includes("c&d"));
  parseSvg(confusionMatrixSvg({ title: "one", classes: ["only"], matrix: [[7]] }), "one");
  parseSvg(confusionMatrixSvg({ title: "none", classes: ["x", "y"], matrix: [[0, 0], [0, 0]] }), "none");
});

Deno.test("confusionMatrixSvg rejects a matrix that does not match the classes or holds bad counts", () => {
  assert.throws(() => confusionMatrixSvg({ title: "t", classes: ["a", "b"], matrix: [[1, 2]] }), TypeError);
  assert.throws(
    () => confusionMatrixSvg({ title: "t", classes: ["a", "b"], matrix: [[1, 2], [3]] }),
    TypeError,
  );
  assert.throws(() => confusionMatrixSvg({ title: "t", classes: ["a"], matrix: [[-1]] }), RangeError);
  assert.throws(() => confusionMatrixSvg({ title: "t", classes: ["a"], matrix: [[NaN]] }), RangeError);
});
