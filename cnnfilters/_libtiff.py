"""libtiff's own messages, caught instead of printed on stderr.

Pillow decodes compressed TIFF with libtiff, whose default handlers print
errors and warnings straight to file descriptor 2 ("ZIPDecode: Decoding
error at scanline 0, incorrect data check"), next to the one line the
command prints for the file. Handlers installed here collect them, per
thread, for the loader to fold into that line or into its notices.

They are installed where libtiff can be found among the loaded libraries
and its messages formatted safely: Linux on x86-64, where a ``va_list`` is
passed as a pointer that ``vsnprintf`` accepts as it is. Elsewhere
:func:`install` does nothing and libtiff keeps printing as before.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["install", "take"]

_local = threading.local()
_state: dict[str, object] = {}  # the installed handlers, kept alive; "done" once tried

# Pillow names the file it hands to libtiff this, whatever the real name is.
_PLACEHOLDER_NAME = "tempfile.tif"
_MESSAGE_BYTES = 512


def install() -> bool:
    """Catch libtiff's messages from now on (once per process); whether they are."""
    if "done" not in _state:
        _state["done"] = True
        try:
            _install()
        except (OSError, AttributeError, StopIteration):  # no libtiff found, or not usable
            _state.pop("handlers", None)
    return "handlers" in _state


def take() -> list[tuple[str, str]]:
    """This thread's messages since the last call, as ``(kind, text)``; kind is
    ``"error"`` or ``"warning"``."""
    messages = getattr(_local, "messages", [])
    _local.messages = []
    return messages


def _install() -> None:
    import ctypes
    import platform

    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return
    from PIL import _imaging  # noqa: F401  (loads the libtiff that Pillow uses)

    with open("/proc/self/maps") as maps:
        path = next(line.split()[-1] for line in maps if "/libtiff" in line)
    libtiff = ctypes.CDLL(path)
    libc = ctypes.CDLL(None)
    vsnprintf = libc.vsnprintf
    vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)

    def collector(kind: str):
        def handle(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
            text = ctypes.create_string_buffer(_MESSAGE_BYTES)
            if fmt:
                vsnprintf(text, _MESSAGE_BYTES, fmt, args)
            message = text.value.decode("utf-8", "replace").strip()
            where = (module or b"").decode("utf-8", "replace")
            if where and where != _PLACEHOLDER_NAME:
                message = f"{where}: {message}"
            if not hasattr(_local, "messages"):
                _local.messages = []
            _local.messages.append((kind, message))

        return handler_type(handle)

    handlers = {"error": collector("error"), "warning": collector("warning")}
    for name, kind in (("TIFFSetErrorHandler", "error"), ("TIFFSetWarningHandler", "warning")):
        setter = getattr(libtiff, name)
        setter.argtypes, setter.restype = [handler_type], ctypes.c_void_p
        setter(handlers[kind])
    _state["handlers"] = handlers
