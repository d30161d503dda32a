"""Restricted reader for PyTorch's *legacy* (pre-1.6, non-zip) ``torch.save`` files.

Why: the pretrained backbone's weights come as a legacy ``.pth`` file, and
``torch.load`` would both drag torch into the product and execute whatever
callables the pickle names. This module reads such a file with numpy only and
an unpickler whose ``find_class`` resolves a short allow-list of names to our
own numpy-building callables; any other global is refused with
:class:`UnsafePickle` before it can be called.

Layout of a legacy file (all pickles, protocol 2):

1. magic number ``0x1950a86a20f9469cfc6c``
2. protocol version ``1001``
3. ``sys_info`` dict (``little_endian``, ``type_sizes``)
4. the saved object; each storage inside it is a persistent id
   ``('storage', storage_type, key, location, numel, view_metadata)``
5. the list of storage keys, in the order their bytes follow
6. for each key: an 8-byte element count, then ``count * itemsize`` raw bytes
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["LegacyFormatError", "UnsafePickle", "load_state_dict", "loads_state_dict"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype (little-endian; flipped for big-endian files).
# Element sizes are the dtype's, not sys_info's C type sizes: torch itself sizes
# LongStorage at 8 bytes even in files written where a C long is 4 (Windows).
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class UnsafePickle(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing was called."""


class LegacyFormatError(ValueError):
    """The file is not a well-formed legacy torch file, or fails its checksum."""


class _Sealed:
    """Refuses pickle's BUILD opcode, which would otherwise let a crafted file
    overwrite the attributes of our objects after they were validated."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickle(f"refusing to set state on {type(self).__name__}")


class _StorageType(_Sealed):
    """Stand-in for ``torch.<X>Storage``: only carries the dtype to allocate."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


class _Storage(_Sealed):
    """A storage whose bytes come after the pickle; filled in once read."""

    __slots__ = ("data", "dtype", "numel")

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _PendingTensor(_Sealed):
    """What ``_rebuild_tensor_v2`` yields: a view to cut once storages are read."""

    __slots__ = ("offset", "shape", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple) -> None:
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride

    def materialize(self) -> np.ndarray:
        """Copy the strided view out of the flat storage, bounds-checked first."""
        data = self.storage.data
        if data is None:
            raise LegacyFormatError("tensor refers to a storage that was never read")
        if any(n < 0 for n in self.shape) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise LegacyFormatError("negative size, stride or offset")
        if 0 in self.shape:
            return np.empty(self.shape, dtype=data.dtype)
        if math.prod(self.shape) > data.size:
            # Only zero strides (expand) can do this; refusing keeps every copy
            # no larger than the bytes actually present in the file.
            raise LegacyFormatError("tensor has more elements than its storage")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if last >= data.size:
            raise LegacyFormatError("tensor view runs past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:],
            shape=self.shape,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _PendingTensor:
    """Allow-listed replacement for ``torch._utils._rebuild_tensor_v2``."""
    if not isinstance(storage, _Storage):
        raise LegacyFormatError("tensor storage is not a persistent storage id")
    try:
        shape = tuple(int(n) for n in size)
        strides = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as exc:
        raise LegacyFormatError(f"bad tensor geometry: {exc}") from None
    if len(shape) != len(strides):
        raise LegacyFormatError("size and stride have different lengths")
    return _PendingTensor(storage, offset, shape, strides)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> Any:
    """Allow-listed replacement for ``torch._utils._rebuild_parameter``: a
    saved ``nn.Parameter`` is just its tensor for inference."""
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(np.dtype(code)) for name, code in STORAGE_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and torch storage ids.

    ``find_class`` is the single path by which a pickle can reach a callable
    (GLOBAL, STACK_GLOBAL and the EXT opcodes all go through it), so refusing
    there means REDUCE/BUILD/INST/OBJ can only ever call our own functions.
    """

    def __init__(self, file: BinaryIO, big_endian: bool = False) -> None:
        super().__init__(file)
        self._big_endian = big_endian
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise LegacyFormatError(f"unsupported persistent id: {pid!r:.80}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise LegacyFormatError("persistent id does not name a storage class")
        if view_metadata is not None:
            raise LegacyFormatError("storage views (pre-0.4 files) are not supported")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise LegacyFormatError("malformed storage id")
        storage = self.storages.get(key)
        if storage is None:
            dtype = storage_type.dtype.newbyteorder(">") if self._big_endian else storage_type.dtype
            storage = self.storages[key] = _Storage(dtype, numel)
        elif storage.dtype.kind != storage_type.dtype.kind or storage.numel != numel:
            raise LegacyFormatError(f"storage {key} declared twice with different types")
        return storage


def _restricted_load(f: BinaryIO, big_endian: bool = False) -> tuple[Any, RestrictedUnpickler]:
    unpickler = RestrictedUnpickler(f, big_endian)
    return unpickler.load(), unpickler


def _read_storages(f: BinaryIO, keys: Any, storages: dict[str, _Storage], big_endian: bool) -> None:
    """Read the raw storage section, checking each count against the pickle's."""
    if not isinstance(keys, list) or set(keys) != set(storages) or len(keys) != len(storages):
        raise LegacyFormatError("storage key list does not match the storages referenced")
    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise LegacyFormatError("truncated storage header")
        count = int.from_bytes(header, "big" if big_endian else "little", signed=True)
        if count != storage.numel:
            raise LegacyFormatError(f"storage {key}: {count} elements on disk, {storage.numel} declared")
        nbytes = count * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise LegacyFormatError(f"storage {key} is truncated")
        data = np.frombuffer(raw, dtype=storage.dtype)
        storage.data = data.astype(storage.dtype.newbyteorder("=")) if big_endian else data


def loads_state_dict(data: bytes) -> dict[str, np.ndarray]:
    """Parse legacy-format bytes (already trusted by checksum) into arrays."""
    f = io.BytesIO(data)
    magic, _ = _restricted_load(f)
    if magic != MAGIC_NUMBER:
        raise LegacyFormatError("not a legacy torch file (bad magic number)")
    version, _ = _restricted_load(f)
    if version != PROTOCOL_VERSION:
        raise LegacyFormatError(f"unsupported legacy protocol version {version!r}")
    sys_info, _ = _restricted_load(f)
    if not isinstance(sys_info, dict):
        raise LegacyFormatError("sys_info is not a dict")
    big_endian = not sys_info.get("little_endian", True)
    state, unpickler = _restricted_load(f, big_endian)
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, _PendingTensor) for k, v in state.items()):
        raise LegacyFormatError("file does not hold a flat state dict of tensors")
    keys, _ = _restricted_load(f)
    _read_storages(f, keys, unpickler.storages, big_endian)
    return {name: tensor.materialize() for name, tensor in state.items()}


def load_state_dict(path: str | Path, expected_sha256: str) -> dict[str, np.ndarray]:
    """Load a legacy ``torch.save``-d state dict as ``{name: ndarray}``.

    The checksum is verified on the exact bytes that are then parsed (read
    once, so the file cannot change between check and use) and before any
    unpickling happens.
    """
    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.lower():
        raise LegacyFormatError(f"sha256 mismatch for {path}: got {actual}, expected {expected_sha256}")
    return loads_state_dict(data)
