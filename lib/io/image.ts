/**
 * PNG and JPEG decoding to 8-bit HWC pixels, and the conversion of a decoded image to a model input: channel
 * conversion, bilinear resize and normalisation to a float32 CHW tensor.
 */
import { convertIndexedToRgb, decode as decodePngBytes, type DecodedPng } from "npm:fast-png@8.0.0";
import jpeg from "npm:jpeg-js@0.4.4";
import { inflateSync } from "node:zlib";

/** A decoded image: 8 bits per sample, pixels row-major, samples of one pixel together (HWC). */
export interface DecodedImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). */
  channels: number;
  /** `height·width·channels` bytes. */
  data: Uint8Array;
}

/** The formats `decodeImage` understands. */
export type ImageFormat = "png" | "jpeg";

/** What the model expects: its input geometry and the per-channel normalisation. */
export interface ModelInputSpec {
  /** Input channels (C): 1 or 3. */
  channels: number;
  /** Input height in pixels (H). */
  height: number;
  /** Input width in pixels (W). */
  width: number;
  /** Per-channel mean of pixel values scaled to [0, 1]. */
  mean: number[];
  /** Per-channel standard deviation of pixel values scaled to [0, 1]. */
  std: number[];
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The format of an encoded image by its magic bytes, or `null` when it is neither PNG nor JPEG. */
export function detectImageFormat(bytes: Uint8Array): ImageFormat | null {
  if (bytes.length >= 8 && PNG_SIGNATURE.every((b, i) => bytes[i] === b)) return "png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  return null;
}

/**
 * Decodes a PNG (any bit depth, palette, interlacing) or baseline/progressive JPEG to 8-bit HWC pixels.
 * Throws a `SyntaxError` naming `file` when the bytes are not an image or are damaged — for a PNG also on
 * a chunk CRC or zlib checksum mismatch, pixel data short or long for the size in the header, a zero width
 * or height, or a palette image without its PLTE chunk.
 *
 * @example Decode a PNG made on the spot
 * ```ts
 * import { encode } from "npm:fast-png@8.0.0";
 * import { decodeImage } from "./image.ts";
 * const png = encode({ width: 2, height: 1, channels: 1, data: new Uint8Array([0, 255]) });
 * console.log(decodeImage(png, "two.png")); // { width: 2, height: 1, channels: 1, data: [0, 255] }
 * ```
 */
export function decodeImage(bytes: Uint8Array, file = "<bytes>"): DecodedImage {
  const format = detectImageFormat(bytes);
  if (format === null) {
    const head = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, "0")).join(" ");
    throw new SyntaxError(
      `${file}: not a PNG or JPEG image (expected magic bytes 89 50 4e 47 or ff d8 ff, found ${
        head || "an empty file"
      })`,
    );
  }
  try {
    return format === "png" ? decodePng(bytes) : decodeJpeg(bytes);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new SyntaxError(`${file}: damaged ${format.toUpperCase()} image: ${message}`, { cause: error });
  }
}

/** Reads and decodes an image file; errors name the file. */
export async function readImage(path: string): Promise<DecodedImage> {
  return decodeImage(await Deno.readFile(path), path);
}

function decodePng(bytes: Uint8Array): DecodedImage {
  // fast-png checks the chunk layout and, asked to, every chunk's CRC; the rest is checked here.
  const png: DecodedPng = decodePngBytes(bytes, { checkCrc: true });
  const { width, height } = png;
  if (!(width >= 1 && height >= 1)) {
    throw new Error(`the image is ${width}×${height} pixels; width and height must be at least 1`);
  }
  const { colourType, interlaced, idat } = pngHeaderAndData(bytes);
  checkPngPixelData(idat, width, height, png.channels * png.depth, interlaced);
  if (colourType === 3) {
    if (!png.palette || png.palette.length === 0) throw new Error("palette image without a PLTE chunk");
    const data = convertIndexedToRgb(png);
    return { width, height, channels: png.palette[0].length, data };
  }
  const channels = png.channels;
  const count = width * height * channels;
  const data = new Uint8Array(count);
  const source = png.data;
  if (png.depth === 8) {
    data.set(source.subarray(0, count));
  } else if (png.depth === 16) {
    for (let i = 0; i < count; i++) data[i] = Math.round(source[i] / 257);
  } else {
    // 1, 2 or 4 bits per sample (gray only), packed MSB first, each row starting on a byte boundary.
    const depth = png.depth, scale = 255 / ((1 << depth) - 1), mask = (1 << depth) - 1;
    const rowBytes = Math.ceil((width * channels * depth) / 8);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width * channels; x++) {
        const bit = x * depth;
        const byte = source[y * rowBytes + (bit >> 3)];
        data[y * width * channels + x] = Math.round(((byte >> (8 - depth - (bit & 7))) & mask) * scale);
      }
    }
  }
  return { width, height, channels, data };
}

/**
 * The IHDR colour type and interlace method of a PNG whose chunk layout fast-png has accepted, and its IDAT
 * payloads in order (the chunks up to IEND).
 */
function pngHeaderAndData(bytes: Uint8Array) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let colourType = -1, interlaced = false;
  const idat: Uint8Array[] = [];
  for (let at = 8; at + 12 <= bytes.length;) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR" && data.length === 13) {
      colourType = data[9];
      interlaced = data[12] !== 0;
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    at += 12 + length;
  }
  return { colourType, interlaced, idat } as const;
}

/** Column/row start and step of the seven Adam7 passes. */
const ADAM7_PASSES = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

/**
 * Checks the zlib stream of the IDAT chunks, which fast-png does not: its Adler-32 checksum, and that it
 * holds exactly the filtered rows the header promises (each row a filter byte and its packed samples; an
 * interlaced image a run of such rows per non-empty Adam7 pass) — fast-png pads missing bytes with zeros
 * and ignores extra ones.
 */
function checkPngPixelData(
  idat: Uint8Array[],
  width: number,
  height: number,
  bitsPerPixel: number,
  interlaced: boolean,
): void {
  /** Bytes of `h` filtered rows of `w` pixels, none for an empty pass. */
  function passBytes(w: number, h: number): number {
    return w > 0 && h > 0 ? h * (1 + Math.ceil((w * bitsPerPixel) / 8)) : 0;
  }
  let expected = 0;
  if (!interlaced) expected = passBytes(width, height);
  else {
    for (const [x0, y0, dx, dy] of ADAM7_PASSES) {
      expected += passBytes(Math.ceil((width - x0) / dx), Math.ceil((height - y0) / dy));
    }
  }
  const stream = new Uint8Array(idat.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of idat) {
    stream.set(chunk, offset);
    offset += chunk.length;
  }
  let inflated: Uint8Array;
  try {
    // One byte over the expected length is enough to tell that the data is long.
    inflated = inflateSync(stream, { maxOutputLength: expected + 1 });
  } catch (error) {
    if ((error as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new Error(
        `the pixel data is long: more than the ${expected} bytes of a ${width}×${height} image`,
      );
    }
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(`the compressed pixel data (IDAT) is damaged: ${message}`, { cause: error });
  }
  if (inflated.length !== expected) {
    throw new Error(
      `the pixel data is ${inflated.length < expected ? "short" : "long"}: ${inflated.length} bytes, ` +
        `a ${width}×${height} image needs ${expected}`,
    );
  }
}

function decodeJpeg(bytes: Uint8Array): DecodedImage {
  const decoded = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 1024 });
  const { width, height } = decoded;
  const rgb = decoded.data;
  if (jpegComponentCount(bytes) !== 1) return { width, height, channels: 3, data: rgb };
  // jpeg-js always expands to RGB; a one-component (grayscale) JPEG is kept as one channel.
  const gray = new Uint8Array(width * height);
  for (let i = 0; i < gray.length; i++) gray[i] = rgb[3 * i];
  return { width, height, channels: 1, data: gray };
}

/** The number of colour components in a JPEG's start-of-frame segment (3 when it cannot be found). */
function jpegComponentCount(bytes: Uint8Array): number {
  let i = 2;
  while (i + 9 < bytes.length) {
    if (bytes[i] !== 0xff) return 3;
    const marker = bytes[i + 1];
    if (marker === 0xff) {
      i++;
      continue;
    }
    const length = (bytes[i + 2] << 8) | bytes[i + 3];
    // SOF0..SOF15 except DHT (c4), JPG (c8) and DAC (cc).
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return bytes[i + 9];
    }
    i += 2 + length;
  }
  return 3;
}

/**
 * Converts an image to `channels` channels: gray → RGB replicates, RGB → gray uses the ITU-R 601 luma weights
 * (0.299, 0.587, 0.114), alpha is dropped. Returns float HWC values in [0, 255].
 */
export function convertChannels(image: DecodedImage, channels: number): Float32Array {
  if (channels !== 1 && channels !== 3) {
    throw new RangeError(`convertChannels: target channels must be 1 or 3, got ${channels}`);
  }
  const { width, height, channels: from, data } = image;
  if (![1, 2, 3, 4].includes(from) || data.length !== width * height * from) {
    throw new TypeError(
      `convertChannels: image of ${width}×${height}×${from} must hold ${width * height * from} bytes, ` +
        `has ${data.length}`,
    );
  }
  const pixels = width * height;
  const out = new Float32Array(pixels * channels);
  const color = from >= 3;
  for (let p = 0; p < pixels; p++) {
    const s = p * from;
    if (channels === 1) {
      out[p] = color ? 0.299 * data[s] + 0.587 * data[s + 1] + 0.114 * data[s + 2] : data[s];
    } else if (color) {
      out[3 * p] = data[s];
      out[3 * p + 1] = data[s + 1];
      out[3 * p + 2] = data[s + 2];
    } else {
      out[3 * p] = out[3 * p + 1] = out[3 * p + 2] = data[s];
    }
  }
  return out;
}

/**
 * Bilinear resize of float HWC pixels to CHW at `height`×`width`, with half-pixel centres (PyTorch's
 * `interpolate(mode="bilinear", align_corners=False)` without antialiasing). Same size copies exactly.
 */
export function resizeBilinear(
  hwc: Float32Array,
  inHeight: number,
  inWidth: number,
  channels: number,
  height: number,
  width: number,
): Float32Array {
  if (!(inHeight >= 1 && inWidth >= 1 && Number.isInteger(inHeight) && Number.isInteger(inWidth))) {
    throw new RangeError(`resizeBilinear: input size must be positive integers, got ${inHeight}×${inWidth}`);
  }
  if (hwc.length !== inHeight * inWidth * channels) {
    throw new TypeError(
      `resizeBilinear: input of ${inHeight}×${inWidth}×${channels} must hold ${
        inHeight * inWidth * channels
      } ` +
        `values, has ${hwc.length}`,
    );
  }
  if (!(height >= 1 && width >= 1 && Number.isInteger(height) && Number.isInteger(width))) {
    throw new RangeError(`resizeBilinear: output size must be positive integers, got ${height}×${width}`);
  }
  const out = new Float32Array(channels * height * width);
  // Source coordinate and blend weight per output column/row, computed once.
  const axis = (outSize: number, inSize: number) => {
    const lo = new Int32Array(outSize), hi = new Int32Array(outSize), t = new Float32Array(outSize);
    const scale = inSize / outSize;
    for (let o = 0; o < outSize; o++) {
      const src = Math.min(Math.max((o + 0.5) * scale - 0.5, 0), inSize - 1);
      lo[o] = Math.floor(src);
      hi[o] = Math.min(lo[o] + 1, inSize - 1);
      t[o] = src - lo[o];
    }
    return { lo, hi, t };
  };
  const ys = axis(height, inHeight), xs = axis(width, inWidth);
  for (let y = 0; y < height; y++) {
    const r0 = ys.lo[y] * inWidth, r1 = ys.hi[y] * inWidth, ty = ys.t[y];
    for (let x = 0; x < width; x++) {
      const c0 = xs.lo[x], c1 = xs.hi[x], tx = xs.t[x];
      for (let c = 0; c < channels; c++) {
        const a = hwc[(r0 + c0) * channels + c], b = hwc[(r0 + c1) * channels + c];
        const d = hwc[(r1 + c0) * channels + c], e = hwc[(r1 + c1) * channels + c];
        const top = a + (b - a) * tx, bottom = d + (e - d) * tx;
        out[(c * height + y) * width + x] = top + (bottom - top) * ty;
      }
    }
  }
  return out;
}

/**
 * An image as uint8 CHW at the requested geometry (channel conversion then bilinear resize, rounded) — how image
 * folders are stored in memory, and what the views of test-time augmentation (`ttaInputs`, `ttaLogits`) take.
 *
 * @param image A decoded image, any size and any of the four channel layouts.
 * @param geometry The model's input channels, height and width.
 * @returns `channels·height·width` bytes, CHW.
 *
 * @example An RGB PNG as one gray 28×28 image
 * ```ts
 * import { encode } from "npm:fast-png@8.0.0";
 * import { decodeImage, toUint8CHW } from "@compact-transformers/cct";
 *
 * const png = encode({ width: 56, height: 56, channels: 3, data: new Uint8Array(56 * 56 * 3).fill(200) });
 * const bytes = toUint8CHW(decodeImage(png, "gray.png"), { channels: 1, height: 28, width: 28 });
 * console.log(bytes.length, bytes[0]); // 784 200
 * ```
 */
export function toUint8CHW(
  image: DecodedImage,
  { channels, height, width }: Pick<ModelInputSpec, "channels" | "height" | "width">,
): Uint8Array {
  const chw = resizeBilinear(
    convertChannels(image, channels),
    image.height,
    image.width,
    channels,
    height,
    width,
  );
  const out = new Uint8Array(chw.length);
  for (let i = 0; i < chw.length; i++) out[i] = Math.round(chw[i]); // Uint8Array clamps to [0, 255]
  return out;
}

/**
 * An image as a float32 CHW model input: channel conversion (gray ↔ RGB, alpha dropped), bilinear resize to
 * `height`×`width`, then `(x/255 − mean[c])/std[c]`.
 *
 * @param image A decoded image, any size and any of the four channel layouts.
 * @param spec The model's input geometry and normalisation (a `Dataset` or `CheckpointInfo` plus the geometry fits).
 * @returns `channels·height·width` floats, CHW.
 * @throws {TypeError} If `mean` or `std` does not have one entry per channel.
 *
 * @example A gray PNG as a CIFAR-shaped input
 * ```ts
 * import { encode } from "npm:fast-png@8.0.0";
 * import { decodeImage, toModelInput } from "@compact-transformers/cct";
 *
 * const image = decodeImage(encode({ width: 4, height: 4, channels: 1, data: new Uint8Array(16).fill(128) }));
 * const input = toModelInput(image, {
 *   channels: 3, height: 32, width: 32, mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616],
 * });
 * console.log(input.length); // 3072
 * ```
 */
export function toModelInput(image: DecodedImage, spec: ModelInputSpec): Float32Array {
  const { channels, height, width, mean, std } = spec;
  if (mean.length !== channels || std.length !== channels) {
    throw new TypeError(
      `toModelInput: expected ${channels} means and stds, got ${mean.length} and ${std.length}`,
    );
  }
  const chw = resizeBilinear(
    convertChannels(image, channels),
    image.height,
    image.width,
    channels,
    height,
    width,
  );
  const plane = height * width;
  for (let c = 0; c < channels; c++) {
    const scale = 1 / (255 * std[c]), shift = mean[c] / std[c];
    for (let p = c * plane; p < (c + 1) * plane; p++) chw[p] = chw[p] * scale - shift;
  }
  return chw;
}
