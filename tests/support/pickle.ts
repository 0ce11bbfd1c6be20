/** A tiny pickle and ZIP writer for hand-crafted PyTorch checkpoints (tests of the safe `.pth` reader). */
import { crc32 } from "../../lib/io/zip.ts";

const encoder = new TextEncoder();

export type Part = number | string | Uint8Array | Part[];
/** Concatenates bytes: numbers are single bytes, strings their UTF-8. */
export function bytes(...parts: Part[]): Uint8Array {
  const out: number[] = [];
  const add = (part: Part): void => {
    if (typeof part === "number") out.push(part);
    else if (typeof part === "string") out.push(...encoder.encode(part));
    else if (part instanceof Uint8Array) out.push(...part);
    else part.forEach(add);
  };
  parts.forEach(add);
  return Uint8Array.from(out);
}
export const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
export const u16 = (n: number) => new Uint8Array(new Uint16Array([n]).buffer);
export const short = (s: string) => [0x8c, encoder.encode(s).length, s]; // SHORT_BINUNICODE
export const unicode = (s: string) => ["X", u32(encoder.encode(s).length), s]; // BINUNICODE
export const global = (module: string, name: string) => ["c", `${module}\n${name}\n`];
export const put = (index: number) => ["q", index]; // BINPUT
export const get = (index: number) => ["h", index]; // BINGET
export const MARK = "(", TUPLE = "t", REDUCE = "R", STOP = ".", SETITEM = "s", SETITEMS = "u";
export const ORDERED_DICT = [global("collections", "OrderedDict"), ")", REDUCE];

/** A stored (uncompressed) ZIP of the given files, in order. */
export function zip(files: Record<string, Uint8Array>): Uint8Array {
  const local: Part[] = [], central: Part[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(files)) {
    const n = encoder.encode(name), crc = u32(crc32(data)), size = u32(data.length);
    const header = bytes(
      u32(0x04034b50),
      u16(20),
      u16(0),
      u16(0),
      u16(0),
      u16(0),
      crc,
      size,
      size,
      u16(n.length),
      u16(0),
      n,
    );
    local.push(header, data);
    central.push(
      bytes(
        u32(0x02014b50),
        u16(20),
        u16(20),
        u16(0),
        u16(0),
        u16(0),
        u16(0),
        crc,
        size,
        size,
        u16(n.length),
      ),
      bytes(u16(0), u16(0), u16(0), u16(0), u32(0), u32(offset), n),
    );
    offset += header.length + data.length;
  }
  const directory = bytes(central);
  const count = u16(Object.keys(files).length);
  return bytes(
    local,
    directory,
    u32(0x06054b50),
    u16(0),
    u16(0),
    count,
    count,
    u32(directory.length),
    u32(offset),
    u16(0),
  );
}

/** A checkpoint archive named "a" with a pickle and raw storages. */
export function pth(pickle: Uint8Array, storages: Record<string, Uint8Array> = {}): Uint8Array {
  const files: Record<string, Uint8Array> = { "a/data.pkl": pickle };
  for (const [key, data] of Object.entries(storages)) files[`a/data/${key}`] = data;
  files["a/version"] = encoder.encode("3\n");
  return zip(files);
}
