"""A restricted reader for model files saved by the reference's ``main.py`` (reference-implementation §3.2).

``main.py`` saves ``torch.save((model.module, loss_list, scaler), path)``: a pickled
``CUB_Network`` or ``SOP_Network`` (torchvision ResNet-50 inside), the list of losses and the
GradScaler. Loading that with ``torch.load(weights_only=False)`` would import the reference's code
and run whatever the pickle asks for. This reader never does: it opens torch's zip format itself,
maps only the classes such a file contains to inert stand-ins that just collect their state,
rebuilds the tensors from the archive's storages, and refuses any other class with one line.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import zipfile
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ctxsim.errors import ReferenceFormatError, one_line

# -- inert stand-ins ---------------------------------------------------------------------------


class Stub:
    """Stand-in for a pickled object of an allowed class: records the class name and its state."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Stub":
        obj = object.__new__(cls)
        obj.state = {}
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # NEWOBJ/REDUCE may pass arguments
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            d, s = state
            state = {**(d or {}), **(s or {})}
        if not isinstance(state, dict):
            raise ReferenceFormatError(f"unexpected pickled state for {self.qualname}: {type(state).__name__}")
        self.state = state

    @property
    def short_name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<stand-in {self.qualname}>"


_STUB_CLASSES: dict[str, type] = {}


def _stub_class(qualname: str) -> type:
    if qualname not in _STUB_CLASSES:
        _STUB_CLASSES[qualname] = type(qualname.rsplit(".", 1)[-1], (Stub,), {"qualname": qualname})
    return _STUB_CLASSES[qualname]


def _inert_function(qualname: str) -> Callable[..., Any]:
    def f(*args: Any, **kwargs: Any) -> Any:
        return None

    f.__qualname__ = f.__name__ = "inert:" + qualname
    return f


def _device(*args: Any) -> str:
    """torch.device(...) as plain text: the file's device placement is irrelevant here."""
    return ":".join(str(a) for a in args)


class _StorageType:
    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# Module classes a reference model file may contain (networks.py + torchvision ResNet-50 + wrappers).
_MODULE_CLASSES = {
    "networks.CUB_Network",
    "networks.SOP_Network",
    "torch.nn.parallel.data_parallel.DataParallel",
    "torchvision.models.resnet.ResNet",
    "torchvision.models.resnet.Bottleneck",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.pooling.AdaptiveMaxPool2d",
    "torch.nn.modules.pooling.AdaptiveAvgPool2d",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.normalization.LayerNorm",
}
# The GradScaler (old and new homes) and what its pickled state may reference.
_SCALER_CLASSES = {"torch.cuda.amp.grad_scaler.GradScaler", "torch.amp.grad_scaler.GradScaler"}
_INERT_FUNCTIONS = {
    "torch.cuda.amp.grad_scaler._refresh_per_optimizer_state",
    "torch.amp.grad_scaler._refresh_per_optimizer_state",
    "torch.cuda.amp.grad_scaler.OptState",
    "torch.amp.grad_scaler.OptState",
}


class _Storage:
    """A storage of the archive, read lazily as a flat tensor of its dtype."""

    def __init__(self, reader: "_ArchiveReader", key: str, dtype: torch.dtype, numel: Optional[int]) -> None:
        self.reader, self.key, self.dtype, self.numel = reader, key, dtype, numel
        self._flat: Optional[torch.Tensor] = None

    def flat(self) -> torch.Tensor:
        if self._flat is None:
            raw = self.reader.storage_bytes(self.key)
            itemsize = torch.empty((), dtype=self.dtype).element_size()
            if len(raw) % itemsize:
                raise ReferenceFormatError(f"storage {self.key} has {len(raw)} bytes, not a multiple of {itemsize}")
            n = len(raw) // itemsize
            if self.numel is not None and n != self.numel:
                raise ReferenceFormatError(f"storage {self.key} holds {n} elements, the pickle says {self.numel}")
            self._flat = torch.frombuffer(bytearray(raw), dtype=self.dtype) if n else torch.empty(0, dtype=self.dtype)
        return self._flat


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, requires_grad: Any = False, *rest: Any) -> torch.Tensor:
    """Safe replacement of torch._utils._rebuild_tensor_v2: a view of the archive storage, bounds-checked."""
    if not isinstance(storage, _Storage):
        raise ReferenceFormatError("a tensor refers to something that is not an archive storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    flat = storage.flat()
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or len(size) != len(stride) or int(offset) < 0:
        raise ReferenceFormatError(f"a tensor of storage {storage.key} has an invalid shape")
    extent = int(offset) + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0)
    if extent > flat.numel():
        raise ReferenceFormatError(f"a tensor reads past the end of storage {storage.key}")
    view = torch.as_strided(flat, size, stride, int(offset))
    if int(offset) == 0 and view.numel() == flat.numel() and view.is_contiguous():
        return view  # the usual case: one tensor per storage, no second copy
    return view.clone()  # a view into a shared storage: own its data


def _rebuild_parameter(data: Any, requires_grad: Any = True, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise ReferenceFormatError("a parameter does not wrap a tensor")
    return data


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    """copyreg._reconstructor (pickle protocols 0/1) restricted to stand-in classes."""
    if not (isinstance(cls, type) and issubclass(cls, Stub)):
        raise ReferenceFormatError("copyreg._reconstructor used on a class that is not allowed")
    return cls()


def _allowed(qualname: str) -> Any:
    if qualname in _MODULE_CLASSES or qualname in _SCALER_CLASSES:
        return _stub_class(qualname)
    if qualname in _INERT_FUNCTIONS:
        return _inert_function(qualname)
    table: dict[str, Any] = {
        "collections.OrderedDict": OrderedDict,
        "collections.defaultdict": defaultdict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "torch.device": _device,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "copyreg._reconstructor": _reconstructor,
    }
    if qualname in table:
        return table[qualname]
    if qualname.startswith("torch.") and qualname[len("torch."):] in _STORAGE_DTYPES:
        name = qualname[len("torch."):]
        return _StorageType(name, _STORAGE_DTYPES[name])
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, reader: "_ArchiveReader") -> None:
        super().__init__(io.BytesIO(data))
        self.reader = reader

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 names of Python 2 (e.g. __builtin__.set)
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualname = f"{module}.{name}"
        obj = _allowed(qualname)
        if obj is None:
            raise ReferenceFormatError(
                f"refusing {self.reader.path.name}: it pickles {qualname}, which a reference model file never "
                "contains (allowed: networks.CUB_Network/SOP_Network, torchvision ResNet-50 layers, GradScaler, tensors)"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 4 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise ReferenceFormatError(f"refusing {self.reader.path.name}: unexpected persistent id in the pickle")
        _, stype, key, _location, *rest = pid
        numel = int(rest[0]) if rest and isinstance(rest[0], int) else None
        return self.reader.storage(str(key), stype.dtype, numel)


class _ArchiveReader:
    """torch's zip format: ``<prefix>/data.pkl`` + ``<prefix>/data/<key>`` raw little-endian storages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise ReferenceFormatError(
                f"{path.name} is not a torch zip archive (torch >= 1.6 format expected): {e}"
            ) from None
        pkls = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ReferenceFormatError(f"{path.name} is a zip file but not a torch.save archive (no data.pkl)")
        self.prefix = pkls[0][: -len("data.pkl")]
        names = set(self.zip.namelist())
        if self.prefix + "byteorder" in names and self.zip.read(self.prefix + "byteorder").strip() != b"little":
            raise ReferenceFormatError(f"{path.name} was saved on a big-endian machine; not supported")
        self._storages: dict[str, _Storage] = {}

    def storage(self, key: str, dtype: torch.dtype, numel: Optional[int]) -> _Storage:
        if key not in self._storages:
            self._storages[key] = _Storage(self, key, dtype, numel)
        return self._storages[key]

    def storage_bytes(self, key: str) -> bytes:
        try:
            return self.zip.read(f"{self.prefix}data/{key}")
        except KeyError:
            raise ReferenceFormatError(f"{self.path.name}: storage {key} is missing from the archive") from None

    def load(self) -> Any:
        data = self.zip.read(self.prefix + "data.pkl")
        try:
            return _RestrictedUnpickler(data, self).load()
        except ReferenceFormatError:
            raise
        except Exception as e:  # truncated or malformed pickle
            raise ReferenceFormatError(f"{self.path.name}: cannot read the pickle ({one_line(e)})") from None


def restricted_load(path: str | Path) -> Any:
    """Loads a torch zip archive with only the reference file's classes, as inert stand-ins."""
    p = Path(path)
    if not p.is_file():
        raise ReferenceFormatError(f"no such file: {p}")
    return _ArchiveReader(p).load()
