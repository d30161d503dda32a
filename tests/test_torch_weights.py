"""The restricted reader of the backbone's weights file: reads real and synthetic legacy `torch.save` files,
refuses anything that would run code, and checks the SHA-256 before parsing.

Synthetic files are written the way `torch.save` (legacy) writes them, by a pickler that sees stand-in
`torch` / `torch._utils` modules, so the byte stream names exactly the globals a real file does, without
torch.
"""

import collections
import copyreg
import hashlib
import io
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from imago_pipeline.core.embedding import lite0
from imago_pipeline.core.embedding import torch_weights as torch_legacy
from imago_pipeline.core.embedding.torch_weights import LegacyFormatError, UnsafePickle

LITTLE = {"protocol_version": 1001, "little_endian": True,
          "type_sizes": {"short": 2, "int": 4, "long": 4}}


@pytest.fixture
def fake_torch(monkeypatch):
    """Install stand-in torch modules so pickle emits torch.* GLOBALs."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only referenced while writing")

    def _rebuild_parameter(*args):
        raise AssertionError("only referenced while writing")

    for fn in (_rebuild_tensor_v2, _rebuild_parameter):
        fn.__module__, fn.__qualname__ = "torch._utils", fn.__name__
        setattr(utils, fn.__name__, fn)
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class FakeStorage:
    def __init__(self, torch, key, data):
        self.cls = torch.FloatStorage if data.dtype == np.float32 else torch.LongStorage
        self.key, self.data = key, data


class FakeTensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, shape, stride)

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2,
                (*self.args, False, collections.OrderedDict()))


class FakeParameter:
    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_parameter,
                (self.tensor, True, collections.OrderedDict()))


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.cls, obj.key, "cpu", obj.data.size, None)
        return None


def legacy_bytes(obj, storages, *, magic=torch_legacy.MAGIC_NUMBER, sys_info=LITTLE,
                 count_format="<q") -> bytes:
    """Serialise like torch's legacy ``_save``: headers, object, keys, raw storages."""
    buf = io.BytesIO()
    for header in (magic, torch_legacy.PROTOCOL_VERSION, sys_info):
        pickle.dump(header, buf, protocol=2)
    _LegacyPickler(buf, protocol=2).dump(obj)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack(count_format, s.data.size))
        buf.write(s.data.tobytes())
    return buf.getvalue()


def load_bytes(tmp_path, data: bytes):
    """Go through the public, checksum-checked entry point."""
    path = tmp_path / "weights.pth"
    path.write_bytes(data)
    return torch_legacy.load_state_dict(path, hashlib.sha256(data).hexdigest())


def test_reads_views_offsets_shared_storage_and_parameters(fake_torch, tmp_path):
    floats = FakeStorage(fake_torch, "0", np.arange(6, dtype=np.float32))
    longs = FakeStorage(fake_torch, "1", np.array([42], dtype=np.int64))
    state = collections.OrderedDict([
        ("w", FakeTensor(floats, 0, (2, 3), (3, 1))),
        ("w_t", FakeTensor(floats, 0, (3, 2), (1, 3))),        # transposed view, same storage
        ("tail", FakeTensor(floats, 2, (2,), (2,))),           # storage offset + stride
        ("count", FakeTensor(longs, 0, (), ())),               # 0-d int64
        ("param", FakeParameter(FakeTensor(floats, 3, (3,), (1,)))),
    ])
    out = load_bytes(tmp_path, legacy_bytes(state, [floats, longs]))

    assert list(out) == ["w", "w_t", "tail", "count", "param"]
    np.testing.assert_array_equal(out["w"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(out["w_t"], out["w"].T)
    np.testing.assert_array_equal(out["tail"], [2, 4])
    assert out["count"].dtype == np.int64 and out["count"].shape == () and out["count"] == 42
    np.testing.assert_array_equal(out["param"], [3, 4, 5])
    assert out["w"].dtype == np.float32
    out["w"][0, 0] = 99  # arrays are independent copies, not views of one buffer
    assert out["w_t"][0, 0] == 0


def test_big_endian_files_are_byte_swapped(fake_torch, tmp_path):
    values = np.array([1.5, -2.25], dtype=np.float32)
    storage = FakeStorage(fake_torch, "0", values.astype(">f4"))
    storage.cls = fake_torch.FloatStorage
    data = legacy_bytes({"x": FakeTensor(storage, 0, (2,), (1,))}, [storage],
                        sys_info={**LITTLE, "little_endian": False}, count_format=">q")
    out = load_bytes(tmp_path, data)
    np.testing.assert_array_equal(out["x"], values)
    assert out["x"].dtype.isnative


def test_real_lite0_file():
    lite0_weights = lite0.load_weights()
    assert len(lite0_weights) == 296
    kinds = collections.Counter(str(v.dtype) for v in lite0_weights.values())
    assert kinds == {"float32": 247, "int64": 49}  # 49 BatchNorm num_batches_tracked counters
    assert lite0_weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert lite0_weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert lite0_weights["_fc.weight"].shape == (1000, 1280)
    assert not any(k.startswith("_blocks.") and "_se_" in k for k in lite0_weights)


def test_checksum_is_checked_before_parsing(tmp_path, monkeypatch):
    def must_not_parse(data):
        raise AssertionError("parsed despite checksum mismatch")

    monkeypatch.setattr(torch_legacy, "loads_state_dict", must_not_parse)
    with pytest.raises(LegacyFormatError, match="sha256 mismatch"):
        torch_legacy.load_state_dict(lite0.weights_path(), "0" * 64)


def test_the_shipped_weights_file_is_the_one_we_checked():
    assert hashlib.sha256(lite0.weights_path().read_bytes()).hexdigest() == lite0.WEIGHTS_SHA256


class RunsShell:
    """The classic malicious pickle: unpickling calls os.system(command)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _marker_command(tmp_path):
    marker = tmp_path / "pwned"
    return marker, f"touch {marker}"


@pytest.mark.parametrize("protocol", [2, 4])  # GLOBAL and STACK_GLOBAL opcodes
def test_os_system_in_the_state_dict_is_refused_and_not_run(fake_torch, tmp_path, protocol):
    marker, command = _marker_command(tmp_path)
    buf = io.BytesIO()
    for header in (torch_legacy.MAGIC_NUMBER, torch_legacy.PROTOCOL_VERSION, LITTLE):
        pickle.dump(header, buf, protocol=2)
    pickle.dump(collections.OrderedDict(w=RunsShell(command)), buf, protocol=protocol)
    pickle.dump([], buf, protocol=2)

    with pytest.raises(UnsafePickle, match=r"(posix|os)\.system"):
        load_bytes(tmp_path, buf.getvalue())
    assert not marker.exists()


def test_payload_in_the_header_pickles_is_refused_too(tmp_path):
    marker, command = _marker_command(tmp_path)
    with pytest.raises(UnsafePickle):
        load_bytes(tmp_path, pickle.dumps(RunsShell(command), protocol=2))
    assert not marker.exists()


@pytest.mark.parametrize("target", [("builtins", "eval"), ("builtins", "getattr"),
                                    ("subprocess", "Popen"), ("torch", "load"),
                                    ("torch._utils", "_rebuild_device_tensor_from_numpy")])
def test_unlisted_globals_are_refused(tmp_path, target):
    data = b"\x80\x02c%s\n%s\nq\x00." % (target[0].encode(), target[1].encode())
    with pytest.raises(UnsafePickle, match=".".join(target)):
        load_bytes(tmp_path, data)


def test_copyreg_extension_codes_are_refused(tmp_path):
    marker, command = _marker_command(tmp_path)
    code = 0x7FF0
    copyreg.add_extension("posix", "system", code)
    try:
        data = pickle.dumps(RunsShell(command), protocol=2)
        assert b"\x83" in data  # EXT2 opcode, not a GLOBAL
        with pytest.raises(UnsafePickle):
            load_bytes(tmp_path, data)
    finally:
        copyreg.remove_extension("posix", "system", code)
    assert not marker.exists()


def test_bad_magic(fake_torch, tmp_path):
    with pytest.raises(LegacyFormatError, match="magic"):
        load_bytes(tmp_path, legacy_bytes({}, [], magic=123))


def test_view_past_end_of_storage(fake_torch, tmp_path):
    storage = FakeStorage(fake_torch, "0", np.zeros(4, dtype=np.float32))
    with pytest.raises(LegacyFormatError, match="past the end"):
        load_bytes(tmp_path, legacy_bytes({"x": FakeTensor(storage, 2, (3,), (1,))}, [storage]))


def test_truncated_storage(fake_torch, tmp_path):
    storage = FakeStorage(fake_torch, "0", np.zeros(4, dtype=np.float32))
    data = legacy_bytes({"x": FakeTensor(storage, 0, (4,), (1,))}, [storage])
    with pytest.raises(LegacyFormatError, match="truncated"):
        load_bytes(tmp_path, data[:-1])


def test_storage_count_must_match_declaration(fake_torch, tmp_path):
    storage = FakeStorage(fake_torch, "0", np.zeros(4, dtype=np.float32))
    data = bytearray(legacy_bytes({"x": FakeTensor(storage, 0, (4,), (1,))}, [storage]))
    count_at = len(data) - 16 - 8
    data[count_at:count_at + 8] = struct.pack("<q", 1_000_000_000)
    with pytest.raises(LegacyFormatError, match="declared"):
        load_bytes(tmp_path, bytes(data))


def test_tensor_needs_a_real_storage(fake_torch, tmp_path):
    with pytest.raises(LegacyFormatError, match="storage"):
        load_bytes(tmp_path, legacy_bytes({"x": FakeTensor("not a storage", 0, (1,), (1,))}, []))


class TensorWithState(FakeTensor):
    """REDUCE followed by BUILD: tries to rewrite a validated tensor's shape."""

    def __reduce__(self):
        return (*super().__reduce__(), {"shape": (10**12,)})


def test_build_cannot_rewrite_validated_objects(fake_torch, tmp_path):
    storage = FakeStorage(fake_torch, "0", np.zeros(4, dtype=np.float32))
    data = legacy_bytes({"x": TensorWithState(storage, 0, (4,), (1,))}, [storage])
    with pytest.raises(UnsafePickle, match="set state"):
        load_bytes(tmp_path, data)


def test_zero_stride_views_cannot_inflate_memory(fake_torch, tmp_path):
    storage = FakeStorage(fake_torch, "0", np.zeros(1, dtype=np.float32))
    data = legacy_bytes({"x": FakeTensor(storage, 0, (10**6,), (0,))}, [storage])
    with pytest.raises(LegacyFormatError, match="more elements"):
        load_bytes(tmp_path, data)


def test_only_flat_state_dicts_are_accepted(fake_torch, tmp_path):
    storage = FakeStorage(fake_torch, "0", np.zeros(1, dtype=np.float32))
    nested = {"block": {"w": FakeTensor(storage, 0, (1,), (1,))}}
    with pytest.raises(LegacyFormatError, match="flat state dict"):
        load_bytes(tmp_path, legacy_bytes(nested, [storage]))
