"""Ctrl-C that native code turns into another exception.

A SIGINT that lands while a C extension initialises (onnxruntime's pybind module, numpy's) comes back
as ``ImportError("initialization failed")`` with no trace of the interrupt, so "runtime not
installed" would be reported for a user's Ctrl-C. The CLI counts SIGINTs; code that turns an
ImportError into a message first asks whether one arrived meanwhile.
"""

from __future__ import annotations

import signal

_received = 0


def _on_sigint(signum, frame):
    global _received
    _received += 1
    raise KeyboardInterrupt


def count_sigints() -> None:
    """Count SIGINTs (still raising KeyboardInterrupt); leaves a handler other than Python's default alone."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def received() -> int:
    """SIGINTs counted so far (0 when ``count_sigints`` was not called)."""
    return _received


def reraise_if_interrupted_since(before: int) -> None:
    """Raise KeyboardInterrupt if a SIGINT was counted since ``received()`` returned ``before``."""
    if _received != before:
        raise KeyboardInterrupt
