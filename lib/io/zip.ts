/**
 * A minimal, read-only ZIP reader for PyTorch checkpoints: the central directory (with ZIP64), stored and
 * deflated entries, CRC-32 checked. PyTorch's writer sets the data-descriptor flag and leaves the sizes in the
 * local headers zero, so sizes always come from the central directory.
 *
 * Errors: `SyntaxError` for a malformed archive, `RangeError` for a record pointing outside the file; every
 * message starts with the `source` label.
 *
 * @module
 */
import * as zlib from "node:zlib";

/** Node's native CRC-32 (added in Node 22; Deno provides it), ~100× faster than the table loop below. */
const nativeCrc32 = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;

/** One file inside a ZIP archive, as listed by its central directory. */
export interface ZipEntry {
  /** Path inside the archive. */
  name: string;
  /** 0 = stored, 8 = deflate. */
  method: number;
  /** Bytes of (possibly compressed) data in the archive. */
  compressedSize: number;
  /** Bytes after decompression. */
  size: number;
  /** CRC-32 of the uncompressed bytes. */
  crc32: number;
  /** Offset of the entry's data (after its local header) from the start of the archive. */
  dataOffset: number;
}

const EOCD_SIGNATURE = 0x06054b50;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC-32 (the ZIP / PNG polynomial) of `bytes`.
 *
 * @example
 * ```ts
 * import { crc32 } from "./zip.ts";
 * console.assert(crc32(new TextEncoder().encode("123456789")) === 0xcbf43926);
 * ```
 */
export function crc32(bytes: Uint8Array): number {
  if (nativeCrc32) return nativeCrc32(bytes) >>> 0;
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Little-endian reads with explicit bounds checks, so a truncated archive gives a message naming the file. */
class ZipCursor {
  readonly view: DataView;
  constructor(readonly bytes: Uint8Array, readonly source: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(offset: number, length: number, what: string): void {
    if (offset < 0 || offset + length > this.bytes.length) {
      throw new RangeError(
        `${this.source}: ZIP ${what} at byte ${offset} (+${length}) lies beyond the end of the ` +
          `${this.bytes.length}-byte file`,
      );
    }
  }
  u16(offset: number, what: string): number {
    this.need(offset, 2, what);
    return this.view.getUint16(offset, true);
  }
  u32(offset: number, what: string): number {
    this.need(offset, 4, what);
    return this.view.getUint32(offset, true);
  }
  u64(offset: number, what: string): number {
    this.need(offset, 8, what);
    const lo = this.view.getUint32(offset, true), hi = this.view.getUint32(offset + 4, true);
    if (hi >= 0x200000) throw new RangeError(`${this.source}: ZIP ${what} at byte ${offset} exceeds 2^53`);
    return hi * 0x100000000 + lo;
  }
}

function findEndOfCentralDirectory(cursor: ZipCursor): number {
  const { bytes, view } = cursor;
  // The record is 22 bytes plus a comment of at most 65,535 bytes, so it starts in the last 65,557 bytes.
  const lowest = Math.max(0, bytes.length - 22 - 0xffff);
  for (let i = bytes.length - 22; i >= lowest; i--) {
    if (view.getUint32(i, true) === EOCD_SIGNATURE && i + 22 + view.getUint16(i + 20, true) <= bytes.length) {
      return i;
    }
  }
  throw new SyntaxError(`${cursor.source}: not a ZIP archive (no end-of-central-directory record)`);
}

/**
 * Reads the central directory of the ZIP archive in `bytes` and locates every entry's data.
 *
 * @param bytes the whole archive
 * @param source a label for error messages (usually the file path)
 * @returns the entries by name
 * @throws {SyntaxError} when the bytes are not a well-formed archive
 * @throws {RangeError} when a record points outside the file
 */
export function readZipDirectory(bytes: Uint8Array, source = "<bytes>"): Map<string, ZipEntry> {
  const cursor = new ZipCursor(bytes, source);
  const eocd = findEndOfCentralDirectory(cursor);
  let count = cursor.u16(eocd + 10, "entry count");
  let directorySize = cursor.u32(eocd + 12, "central directory size");
  let directoryOffset = cursor.u32(eocd + 16, "central directory offset");
  if (count === 0xffff || directorySize === 0xffffffff || directoryOffset === 0xffffffff) {
    const locator = eocd - 20;
    if (locator < 0 || cursor.u32(locator, "ZIP64 locator") !== ZIP64_LOCATOR_SIGNATURE) {
      throw new SyntaxError(`${source}: ZIP64 sizes announced but no ZIP64 end-of-central-directory locator`);
    }
    const record = cursor.u64(locator + 8, "ZIP64 record offset");
    if (cursor.u32(record, "ZIP64 record") !== ZIP64_EOCD_SIGNATURE) {
      throw new SyntaxError(`${source}: bad ZIP64 end-of-central-directory record at byte ${record}`);
    }
    count = cursor.u64(record + 32, "ZIP64 entry count");
    directorySize = cursor.u64(record + 40, "ZIP64 central directory size");
    directoryOffset = cursor.u64(record + 48, "ZIP64 central directory offset");
  }
  cursor.need(directoryOffset, directorySize, "central directory");

  const decoder = new TextDecoder();
  const entries = new Map<string, ZipEntry>();
  let at = directoryOffset;
  for (let index = 0; index < count; index++) {
    if (cursor.u32(at, "central directory entry") !== CENTRAL_SIGNATURE) {
      throw new SyntaxError(`${source}: bad central directory entry ${index} at byte ${at}`);
    }
    const flags = cursor.u16(at + 8, "entry flags");
    const method = cursor.u16(at + 10, "compression method");
    const crc = cursor.u32(at + 16, "CRC-32");
    let compressedSize = cursor.u32(at + 20, "compressed size");
    let size = cursor.u32(at + 24, "size");
    const nameLength = cursor.u16(at + 28, "name length");
    const extraLength = cursor.u16(at + 30, "extra length");
    const commentLength = cursor.u16(at + 32, "comment length");
    let localOffset = cursor.u32(at + 42, "local header offset");
    cursor.need(at + 46, nameLength + extraLength + commentLength, "entry name");
    const name = decoder.decode(bytes.subarray(at + 46, at + 46 + nameLength));
    // ZIP64 extended information: the 64-bit values present are exactly those whose 32-bit field is saturated.
    for (let extra = at + 46 + nameLength; extra + 4 <= at + 46 + nameLength + extraLength;) {
      const id = cursor.u16(extra, "extra field id"), length = cursor.u16(extra + 2, "extra field length");
      if (id === 0x0001) {
        let field = extra + 4;
        const take = () => {
          if (field + 8 > extra + 4 + length) {
            throw new SyntaxError(`${source}: ZIP64 extra field of "${name}" is too short`);
          }
          const value = cursor.u64(field, "ZIP64 extra field");
          field += 8;
          return value;
        };
        if (size === 0xffffffff) size = take();
        if (compressedSize === 0xffffffff) compressedSize = take();
        if (localOffset === 0xffffffff) localOffset = take();
      }
      extra += 4 + length;
    }
    if (flags & 1) throw new SyntaxError(`${source}: entry "${name}" is encrypted`);
    if (method !== 0 && method !== 8) {
      throw new SyntaxError(
        `${source}: entry "${name}" uses compression method ${method} (only 0 and 8 read)`,
      );
    }
    if (method === 0 && compressedSize !== size) {
      throw new SyntaxError(
        `${source}: stored entry "${name}" has ${compressedSize} B packed but ${size} B unpacked`,
      );
    }
    if (entries.has(name)) throw new SyntaxError(`${source}: duplicate ZIP entry "${name}"`);

    if (cursor.u32(localOffset, `local header of "${name}"`) !== LOCAL_SIGNATURE) {
      throw new SyntaxError(`${source}: bad local header for "${name}" at byte ${localOffset}`);
    }
    const localNameLength = cursor.u16(localOffset + 26, "local name length");
    const localExtraLength = cursor.u16(localOffset + 28, "local extra length");
    const dataOffset = localOffset + 30 + localNameLength + localExtraLength;
    cursor.need(dataOffset, compressedSize, `data of "${name}"`);
    entries.set(name, { name, method, compressedSize, size, crc32: crc, dataOffset });
    at += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}

/**
 * The uncompressed content of one entry, its CRC-32 checked. Stored entries are returned as a view into
 * `bytes` (no copy).
 *
 * @param bytes the whole archive
 * @param entry an entry from {@link readZipDirectory} of the same bytes
 * @param source a label for error messages
 * @throws {SyntaxError} when the data does not inflate or its CRC-32 differs
 */
export function readZipEntry(bytes: Uint8Array, entry: ZipEntry, source = "<bytes>"): Uint8Array {
  const packed = bytes.subarray(entry.dataOffset, entry.dataOffset + entry.compressedSize);
  let data: Uint8Array;
  if (entry.method === 0) {
    data = packed;
  } else {
    try {
      data = zlib.inflateRawSync(packed, { maxOutputLength: Math.max(1, entry.size) });
    } catch (error) {
      throw new SyntaxError(
        `${source}: entry "${entry.name}" does not inflate to ${entry.size} B (${(error as Error).message})`,
      );
    }
    if (data.length !== entry.size) {
      throw new SyntaxError(
        `${source}: entry "${entry.name}" inflates to ${data.length} B, expected ${entry.size} B`,
      );
    }
  }
  const actual = crc32(data);
  if (actual !== entry.crc32) {
    throw new SyntaxError(
      `${source}: entry "${entry.name}" is corrupt (CRC-32 ${actual.toString(16)}, expected ${
        entry.crc32.toString(16)
      })`,
    );
  }
  return data;
}
