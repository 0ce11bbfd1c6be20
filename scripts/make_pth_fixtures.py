"""Writes the tiny .pth fixtures of tests/io/pth_test.ts, without PyTorch.

The files imitate torch.save's zip format exactly where it matters to a reader: a pickle (protocol 2) that calls
torch._utils._rebuild_tensor_v2 / _rebuild_parameter on persistent storage ids, raw little-endian storages under
<archive>/data/<key>, and <archive>/version. Stand-in `torch` modules make Python's own pickler emit the same
GLOBAL / REDUCE / BINPERSID opcodes as the real thing. Next to each checkpoint goes the expected content as a
safetensors file (F32 / I32) written here by hand, independent of the TypeScript writer under test.

Covered: float32, float16 (incl. a subnormal and infinity), bfloat16, float64 (narrowed), int64 (narrowed, with
a storage offset), int32; shared storages; a transposed (non-contiguous) view; a narrowed view with offset; a
stride-0 (expanded) view; a 0-d and an empty tensor; a Parameter; a nested dict; non-tensor values (int beyond
2^31 via LONG1, float, bool, None, string, list); OrderedDict `_metadata` applied with BUILD; stored and deflated
archives.

Run: python3 scripts/make_pth_fixtures.py   (writes tests/io/fixtures/*)
"""

import collections
import json
import os
import pickle
import struct
import sys
import types
import zipfile

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "io", "fixtures")

# --- stand-ins for the torch globals a checkpoint names -------------------------------------------------------
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


def _global(module, fn):
    fn.__module__ = module.__name__
    fn.__qualname__ = fn.__name__
    setattr(module, fn.__name__, fn)
    return fn


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")


def _rebuild_parameter(*args):
    raise RuntimeError("never called")


_global(torch_utils, _rebuild_tensor_v2)
_global(torch_utils, _rebuild_parameter)

STORAGE_FORMATS = {  # storage class name -> (struct code, bytes per element)
    "FloatStorage": ("f", 4),
    "HalfStorage": ("e", 2),
    "BFloat16Storage": ("bf16", 2),
    "DoubleStorage": ("d", 8),
    "LongStorage": ("q", 8),
    "IntStorage": ("i", 4),
}
for _name in STORAGE_FORMATS:
    _cls = type(_name, (), {})
    _cls.__module__ = "torch"
    setattr(torch, _name, _cls)


def bf16_bits(x):
    """float32 bits of x, truncated to the top 16 (what a bfloat16 storage holds)."""
    return struct.unpack("<I", struct.pack("<f", x))[0] >> 16


class Storage:
    def __init__(self, key, kind, values):
        self.key, self.kind, self.values = key, kind, list(values)

    def raw(self):
        code, _ = STORAGE_FORMATS[self.kind]
        if code == "bf16":
            return b"".join(struct.pack("<H", bf16_bits(v)) for v in self.values)
        return b"".join(struct.pack("<" + code, v) for v in self.values)

    def element(self, i):
        """The value a reader must produce for element i, as float32 / int32 would hold it."""
        code, _ = STORAGE_FORMATS[self.kind]
        v = self.values[i]
        if code == "bf16":
            return struct.unpack("<f", struct.pack("<I", bf16_bits(v) << 16))[0]
        if code == "e":
            return struct.unpack("<e", struct.pack("<e", v))[0]
        return v


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def __reduce_ex__(self, protocol):
        hooks = collections.OrderedDict()
        return (_rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False, hooks))

    def elements(self):
        """Row-major elements of the view."""
        out = []

        def walk(dim, at):
            if dim == len(self.size):
                out.append(self.storage.element(at))
                return
            for i in range(self.size[dim]):
                walk(dim + 1, at + i * self.stride[dim])

        walk(0, self.offset)
        return out


class Parameter:
    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self.data, True, collections.OrderedDict()))


class CheckpointPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, obj.kind), obj.key, "cpu", len(obj.values))
        return None


def contiguous(storage, size, offset=0):
    stride, step = [], 1
    for d in reversed(size):
        stride.insert(0, step)
        step *= d
    return Tensor(storage, offset, size, stride)


def build():
    """The fixture state dict and the flat name -> Tensor map a reader must return."""
    grid = Storage("0", "FloatStorage", [0.25 * i - 1.3 for i in range(12)])
    conv = Storage("1", "FloatStorage", [((i * 7919) % 23) / 7 - 1.5 for i in range(12)])
    half = Storage("2", "HalfStorage", [1.0, -2.5, 1 / 3, 2.0**-24, 65504.0, float("inf")])
    bf16 = Storage("3", "BFloat16Storage", [1.0, 3.14159, -1e-3, 7e20])
    double = Storage("4", "DoubleStorage", [0.1, -1 / 3, 1e-40, 123456789.123456789])
    longs = Storage("5", "LongStorage", [99, -5, 0, 2**31 - 1, 7])
    ints = Storage("6", "IntStorage", [-(2**31), 42])
    empty = Storage("7", "FloatStorage", [])
    one = Storage("8", "FloatStorage", [2.5, 9.0, -1.0, 4.0])

    flat = collections.OrderedDict()
    flat["conv.weight"] = contiguous(conv, [2, 3, 2])
    flat["grid"] = contiguous(grid, [3, 4])
    flat["grid_transposed"] = Tensor(grid, 0, [4, 3], [1, 4])  # shares storage "0", non-contiguous
    flat["grid_window"] = Tensor(grid, 5, [2, 2], [4, 1])  # narrowed view with a storage offset
    flat["half"] = contiguous(half, [2, 3])
    flat["bf16"] = contiguous(bf16, [4])
    flat["double"] = contiguous(double, [2, 2])
    flat["labels"] = contiguous(longs, [4], offset=1)
    flat["int32"] = contiguous(ints, [2])
    flat["scalar"] = Tensor(one, 1, [], [])
    flat["empty"] = contiguous(empty, [0, 3])
    flat["expanded"] = Tensor(one, 1, [2, 3], [0, 1])  # stride 0 on the first dim

    state = collections.OrderedDict()
    for name, tensor in flat.items():
        if name == "conv.weight":
            state[name] = Parameter(tensor)
        elif name != "expanded":
            state[name] = tensor
    state["nested"] = {"expanded": flat["expanded"], "step": 2**40, "lr": 0.5, "tag": "x", "on": True}
    state["nested"]["nothing"] = None
    state["nested"]["list"] = [1, 2, 3]
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("conv", {"version": 1})])
    expected = collections.OrderedDict((("nested.expanded" if k == "expanded" else k), v) for k, v in flat.items())
    storages = [grid, conv, half, bf16, double, longs, ints, empty, one]
    return state, expected, storages


def write_pth(path, archive, state, storages, compression):
    import io

    buffer = io.BytesIO()
    CheckpointPickler(buffer, protocol=2).dump(state)
    files = [(f"{archive}/data.pkl", buffer.getvalue()), (f"{archive}/byteorder", b"little")]
    files += [(f"{archive}/data/{storage.key}", storage.raw()) for storage in storages]
    files.append((f"{archive}/version", b"3\n"))
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files:
            # A fixed timestamp keeps the fixtures byte-identical across runs.
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=compression)


def write_expected(path, expected):
    header, blobs, offset = {}, [], 0
    for name in sorted(expected):
        tensor = expected[name]
        is_int = tensor.storage.kind in ("LongStorage", "IntStorage")
        blob = b"".join(struct.pack("<i" if is_int else "<f", v) for v in tensor.elements())
        header[name] = {"dtype": "I32" if is_int else "F32", "shape": list(tensor.size),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    os.makedirs(OUT, exist_ok=True)
    state, expected, storages = build()
    write_pth(os.path.join(OUT, "mixed.pth"), "mixed", state, storages, zipfile.ZIP_STORED)
    write_pth(os.path.join(OUT, "mixed_deflate.pth"), "archive", state, storages, zipfile.ZIP_DEFLATED)
    write_expected(os.path.join(OUT, "mixed.expected.safetensors"), expected)
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
