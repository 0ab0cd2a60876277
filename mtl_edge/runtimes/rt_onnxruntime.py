"""onnxruntime (CPU) behind the runtime-module contract of ``mtl_edge.runtimes``.

Imports only numpy and onnxruntime: the benchmark ships this file to a device beside the runner.
"""

from __future__ import annotations


def version(**options) -> str:
    import onnxruntime

    return onnxruntime.__version__


_SHARED_POOL = False  # set by share_threads(): every session of this process uses one global thread pool


def share_threads(threads: int) -> str:
    """Several sessions in one process (co-resident models), as a user deploys them: one process-wide thread pool
    of ``threads`` intra-op threads instead of one pool per session (onnxruntime's advice for many sessions).
    Called by the runner before the first session; returns how the sessions' threads are set up."""
    global _SHARED_POOL
    import onnxruntime as ort

    ort.set_global_thread_pool_sizes(threads, 1)
    _SHARED_POOL = True
    return "global"


class Model:
    """One InferenceSession with ``threads`` intra-op threads and one inter-op thread (its own pool, or the
    process-wide one after ``share_threads``)."""

    batch = None  # any batch size

    def __init__(self, path: str, threads: int = 1, **options):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if _SHARED_POOL:
            opts.use_per_session_threads = False
        else:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._run = self.session.run

    def prepare(self, inputs: dict):
        import numpy as np

        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}

    def call(self, feed):
        return self._run(None, feed)

    def named(self, raw) -> dict:
        return dict(zip(self.output_names, raw))


load = Model
