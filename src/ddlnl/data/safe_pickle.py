"""Restricted unpickling for CIFAR's official python batches.

The official ``cifar-10-batches-py`` / ``cifar-100-python`` files are Python 2 pickles
(protocol 2). A plain ``pickle.load`` would run any callable a tampered file names, so
this unpickler admits builtin containers, strings, bytes and numbers, plus exactly the
numpy callables needed to rebuild a plain ndarray (``_reconstruct``, ``ndarray``,
``dtype``, under both their ``numpy.core`` and ``numpy._core`` names). Everything
else is refused with a :class:`DataError`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ddlnl.errors import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# (module, name) as written in the pickle -> the object it may resolve to. Nothing else.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}

_NOT_GENUINE_FIX = (
    "this is not a genuine CIFAR python batch; re-obtain the official "
    "cifar-10-python.tar.gz / cifar-100-python.tar.gz and extract it again"
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy array-rebuilding globals."""

    def __init__(self, file, *, source: str = "<bytes>"):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._source}: refused to load global {module}.{name} from a pickle",
                _NOT_GENUINE_FIX,
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._source}: pickle uses persistent ids", _NOT_GENUINE_FIX)


def loads_restricted(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; corrupt input raises DataError."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, OverflowError) as exc:
        raise DataError(
            f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {exc})",
            _NOT_GENUINE_FIX,
        ) from None


def load_pickle_restricted(path: str | Path) -> Any:
    """Read and unpickle the file at ``path`` without running arbitrary code."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}", "check the path and its permissions") from None
    return loads_restricted(data, source=str(path))
