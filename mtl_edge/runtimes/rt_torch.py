"""TorchScript (``torch.jit.load`` on the CPU) behind the runtime-module contract of ``mtl_edge.runtimes``.

Imports only numpy and torch: the benchmark ships this file to a device beside the runner. The
artefact's ``extra/mtl_edge.json`` names its input; the outputs are the keys of the dict its forward
returns, in that order. ``threads`` sets PyTorch's process-wide intra-op thread count.
"""

from __future__ import annotations

import contextlib
import json
import warnings

METADATA = "mtl_edge.json"


@contextlib.contextmanager
def _quiet():
    """TorchScript's deprecation warnings are not the user's concern."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def version(**options) -> str:
    import torch

    return torch.__version__.split("+")[0]


def configure(threads: int) -> None:
    """Process-wide settings for a process that only runs inference (the runner): one inter-op thread, no autograd."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (only possible before any parallel work)
        pass
    torch.set_grad_enabled(False)


class Model:
    batch = None  # any batch size

    def __init__(self, path: str, threads: int = 1, **options):
        import torch

        self._torch = torch
        extra = {METADATA: ""}
        with _quiet():
            self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        self.module.eval()
        try:
            self.meta = json.loads(extra[METADATA] or "{}")
        except ValueError:
            self.meta = {}
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.input_names = [self.meta.get("input", "features")]
        self._outputs = None

    @property
    def output_names(self) -> list[str]:
        """The dict keys forward returns on one zero row, in order."""
        if self._outputs is None:
            size = self.meta.get("input_features")
            if not size:
                raise ValueError(f"no {METADATA} with the input size in the TorchScript file")
            out = self.named(self.call(self._torch.zeros(1, int(size))))
            self._outputs = list(out)
        return self._outputs

    def prepare(self, inputs: dict):
        import numpy as np

        (x,) = inputs.values()
        return self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def call(self, feed):
        if not self._torch.is_grad_enabled():  # the runner turned autograd off for the process
            return self.module(feed)
        with self._torch.inference_mode():
            return self.module(feed)

    def named(self, raw) -> dict:
        if not isinstance(raw, dict):
            raise ValueError(f"forward returns {type(raw).__name__}, not a dict of outputs")
        return {k: v.numpy() for k, v in raw.items()}


load = Model
