"""The only thing that crosses between the trusted judge and the sandbox: plain data.

A message is a frame on a pipe: 4 bytes (big-endian length) of UTF-8 JSON, then the binary
blobs the JSON lists by length. Values are JSON numbers, strings, ``null`` and booleans, and
tagged objects:

* ``{"$": "tuple" | "list", "items": [...]}``, ``{"$": "dict", "items": [[key, value], ...]}``;
* ``{"$": "ndarray", "blob": k}``: blob ``k`` is a ``.npy`` file, read with
  ``allow_pickle=False`` (numbers and booleans only: the dtype kinds ``biufc``); ``"scalar"``
  the same for a NumPy scalar; ``{"$": "tensor", "blob": k, "requires_grad": bool}`` a CPU
  tensor made from such an array;
* ``{"$": "handle", "id": n, "type": name}``: an object that stays in the sandbox (the
  judge can call it or read its attributes, through the sandbox);
* ``{"$": "float", "value": "nan" | "inf" | "-inf"}``: what JSON cannot write;
* from the judge only: ``{"$": "callback", "id": n}`` (a function of the checker the sandbox
  may call back, with plain arguments) and ``{"$": "object", "blob": k}`` (a module the
  checker made, pickled by the judge and unpickled *in the sandbox*; the judge never
  unpickles anything); ``{"$": "arg", "index": k}`` (from the sandbox: the return value is
  the k-th argument itself, changed in place).

:func:`decode` on the trusted side (``trusted=True``) refuses the two judge-only tags and
builds nothing but NumPy arrays, tensors, Python numbers, strings and containers: reading a
message runs no code the learner wrote.
"""

from __future__ import annotations

import io
import json
import math
import os
import select
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "Channel",
    "Closed",
    "Late",
    "ProtocolError",
    "TooLarge",
    "encode",
    "decode",
    "LARGEST_MESSAGE",
    "LARGEST_ANSWER",
]

LARGEST_MESSAGE = 256 * 2**20  # bytes: a larger message ends the conversation
LARGEST_ANSWER = 32 * 2**20  # bytes of arrays in one message the judge accepts from the sandbox
LARGEST_HEADER = 16 * 2**20
NUMERIC = "biufc"


class ProtocolError(Exception):
    """A message that is not plain data as described above."""


class TooLarge(ProtocolError):
    """A message (or an array in it) larger than the receiver accepts."""


class Closed(ProtocolError):
    """The other side ended (or the sandbox was ended)."""


class Late(Exception):
    """No answer before the deadline."""


class Channel:
    """Framed messages over two file descriptors (see the module docstring)."""

    def __init__(self, read_fd: int, write_fd: int, largest: int = LARGEST_MESSAGE) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.largest = largest  # bytes of blobs in one message received; more is refused
        self._buffer = bytearray()

    # -- sending -----------------------------------------------------------------------------
    def send(
        self, message: dict[str, Any], blobs: list[bytes] = (), deadline: float | None = None
    ) -> None:
        """Send one message; with a ``deadline`` (``time.monotonic()``), the write end is
        non-blocking and a reader that stops reading raises :class:`Late`."""
        blobs = list(blobs)
        header = json.dumps({**message, "blobs": [len(b) for b in blobs]}).encode()
        data = b"".join([struct.pack(">I", len(header)), header, *blobs])
        view = memoryview(data)
        if deadline is not None:
            os.set_blocking(self.write_fd, False)
        try:
            while view:
                try:
                    view = view[os.write(self.write_fd, view) :]
                except BlockingIOError:
                    left = deadline - time.monotonic() if deadline is not None else None
                    if left is not None and left <= 0:
                        raise Late() from None
                    select.select([], [self.write_fd], [], left)
        except (BrokenPipeError, OSError) as error:
            raise Closed(f"the other side is gone ({error})") from None

    # -- receiving ---------------------------------------------------------------------------
    def _fill(self, size: int, deadline: float | None) -> None:
        while len(self._buffer) < size:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Late()
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if not ready:
                raise Late()
            chunk = os.read(self.read_fd, max(1 << 16, min(size - len(self._buffer), 1 << 24)))
            if not chunk:
                raise Closed("the other side closed the channel")
            self._buffer += chunk

    def _take(self, size: int, deadline: float | None) -> bytes:
        self._fill(size, deadline)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def receive(self, deadline: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
        (length,) = struct.unpack(">I", self._take(4, deadline))
        if length > LARGEST_HEADER:
            raise ProtocolError(f"a message header of {length} bytes")
        try:
            message = json.loads(self._take(length, deadline).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise ProtocolError(f"a message that is not JSON ({type(error).__name__})") from None
        sizes = message.get("blobs") if isinstance(message, dict) else None
        if not isinstance(sizes, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes
        ):
            raise ProtocolError("a message without its list of blob sizes")
        if sum(sizes) > self.largest:  # (refused before any of it is read)
            raise TooLarge(
                f"an answer of {sum(sizes) / 2**20:.1f} MiB of arrays, more than the "
                f"{self.largest / 2**20:g} MiB the grader accepts in one message"
            )
        return message, [self._take(n, deadline) for n in sizes]


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------
def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array(array, copy=True, order="C"), allow_pickle=False)
    return buffer.getvalue()


def _array(blob: bytes) -> np.ndarray:
    """The array in a ``.npy`` blob, whose header must describe exactly the bytes that
    follow it: a header that claims a larger shape than the blob holds is refused before
    anything is allocated (``np.load`` would allocate the claimed size first)."""
    from numpy.lib import format as npy

    buffer = io.BytesIO(blob)
    try:
        version = npy.read_magic(buffer)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(buffer)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(buffer)
        else:
            raise ValueError(f"format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as error:
        raise ProtocolError(f"a blob that is not a .npy array ({error})") from None
    if dtype.kind not in NUMERIC or dtype.hasobject or dtype.subdtype is not None:
        raise ProtocolError("an array that does not hold numbers")
    count = math.prod(shape)
    offset = buffer.tell()
    if count * dtype.itemsize != len(blob) - offset:
        raise ProtocolError(
            f"an array whose header claims {count} values of {dtype.itemsize} bytes "
            f"in {len(blob) - offset} bytes"
        )
    flat = np.frombuffer(blob, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def encode(
    value: Any,
    blobs: list[bytes],
    *,
    handle: Callable[[Any], dict[str, Any]] | None = None,
    callback: Callable[[Any], int] | None = None,
    pickle_object: bool = False,
    depth: int = 0,
) -> Any:
    """``value`` as a JSON-able tree, appending arrays to ``blobs``. What is not plain data
    becomes ``handle(value)`` (the sandbox's side), a callback (the judge's functions) or a
    pickled object (the judge's modules, ``pickle_object``); otherwise :class:`TypeError`."""
    if depth > 50:
        raise TypeError("a value nested more than 50 levels deep")
    more = dict(handle=handle, callback=callback, pickle_object=pickle_object, depth=depth + 1)
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$": "float", "value": repr(value)}
    if isinstance(value, tuple | list):  # a namedtuple too: it arrives as a plain tuple
        name = "tuple" if isinstance(value, tuple) else "list"
        return {"$": name, "items": [encode(v, blobs, **more) for v in value]}
    if kind is dict:
        items = [[encode(k, blobs, **more), encode(v, blobs, **more)] for k, v in value.items()]
        return {"$": "dict", "items": items}
    if isinstance(value, np.ndarray) and value.dtype.kind in NUMERIC:
        blobs.append(_npy(np.ndarray.view(value, np.ndarray)))
        return {"$": "ndarray", "blob": len(blobs) - 1}
    if isinstance(value, np.generic) and np.asarray(value).dtype.kind in NUMERIC:
        blobs.append(_npy(np.asarray(value)))
        return {"$": "scalar", "blob": len(blobs) - 1}
    torch = __import__("sys").modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():
            plain = torch.Tensor.as_subclass(value, torch.Tensor).detach().cpu()
            array = plain.resolve_conj().resolve_neg().numpy()
            requires_grad = bool(torch.Tensor.requires_grad.__get__(value))
        if array.dtype.kind not in NUMERIC:
            raise TypeError(f"a tensor of dtype {plain.dtype}")
        blobs.append(_npy(array))
        return {"$": "tensor", "blob": len(blobs) - 1, "requires_grad": requires_grad}
    if callback is not None and callable(value) and not isinstance(value, type):
        if not (torch is not None and isinstance(value, torch.nn.Module)):
            return {"$": "callback", "id": callback(value)}
    if pickle_object:
        import pickle

        blobs.append(pickle.dumps(value))
        return {"$": "object", "blob": len(blobs) - 1}
    if handle is not None:
        return handle(value)
    raise TypeError(f"a {kind.__name__} cannot be sent as plain data")


def decode(
    tree: Any,
    blobs: list[bytes],
    *,
    trusted: bool,
    handle: Callable[[dict[str, Any]], Any] | None = None,
    callback: Callable[[int], Any] | None = None,
    arg: Callable[[int], Any] | None = None,
    depth: int = 0,
) -> Any:
    """The value of a tree made by :func:`encode` (see the module docstring)."""
    if depth > 50:
        raise ProtocolError("a value nested more than 50 levels deep")
    more = dict(trusted=trusted, handle=handle, callback=callback, arg=arg, depth=depth + 1)
    if tree is None or type(tree) in (bool, int, float, str):
        return tree
    if type(tree) is not dict or not isinstance(tree.get("$"), str):
        raise ProtocolError(f"an untagged value of type {type(tree).__name__}")
    tag = tree["$"]
    if tag in ("tuple", "list"):
        items = [decode(v, blobs, **more) for v in _list(tree.get("items"))]
        return tuple(items) if tag == "tuple" else items
    if tag == "dict":
        found = {}
        for pair in _list(tree.get("items")):
            if type(pair) is not list or len(pair) != 2:
                raise ProtocolError("a dict item that is not a pair")
            key = decode(pair[0], blobs, **more)
            if type(key) not in (str, int, float, bool, tuple) and key is not None:
                raise ProtocolError("a dict key that is not a plain value")
            found[key] = decode(pair[1], blobs, **more)
        return found
    if tag == "float":
        text = tree.get("value")
        if text not in ("nan", "inf", "-inf"):
            raise ProtocolError("a float that is not nan or inf")
        return float(text)
    if tag in ("ndarray", "scalar", "tensor", "object"):
        index = tree.get("blob")
        if type(index) is not int or not 0 <= index < len(blobs):
            raise ProtocolError("a reference to a blob that is not there")
        if tag == "object":
            if trusted:
                raise ProtocolError("an object from the sandbox (only plain data is accepted)")
            import pickle

            return pickle.loads(blobs[index])  # the judge's own module, in the sandbox
        array = _array(blobs[index])
        if tag == "ndarray":
            return array
        if tag == "scalar":
            return array[()] if array.ndim == 0 else array
        import torch

        tensor = torch.from_numpy(array.copy())
        if tree.get("requires_grad") is True and (
            tensor.is_floating_point() or tensor.is_complex()
        ):
            tensor.requires_grad_()
        return tensor
    if tag == "handle" and trusted and handle is not None:
        if type(tree.get("id")) is not int:
            raise ProtocolError("a handle without an id")
        return handle(tree)
    if tag == "callback" and not trusted and callback is not None:
        return callback(tree.get("id"))
    if tag == "arg" and trusted and arg is not None:
        if type(tree.get("index")) is not int:
            raise ProtocolError("an argument reference without an index")
        return arg(tree["index"])
    raise ProtocolError(f"a value tagged {tag!r}, which is not accepted here")


def _list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise ProtocolError("a container without its list of items")
    return value
