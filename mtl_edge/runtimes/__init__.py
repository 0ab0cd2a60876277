"""One registry of the runtimes that execute exported artefacts, for export verification and the benchmark.

Each runtime is one module that imports only the standard library, numpy and its runtime, so the
benchmark can ship it to a device without mtl_edge (beside ``runner.py``). Its contract:

- ``version(**options) -> str``;
- ``load(path, threads=1, **options)`` -> a model with ``input_names``, ``output_names``, ``batch`` (a
  fixed batch size, or None), ``prepare(inputs) -> feed`` (``inputs`` = ``{input name: array}``; the
  conversions a timer must not see), ``call(feed) -> raw`` (the inference, what the runner times) and
  ``named(raw) -> {output name: array}``;
- optionally ``configure(threads)``: process-wide settings, called by the runner only;
- optionally ``share_threads(threads) -> str``: called by the runner before loading several co-resident
  models in one process, so they share one thread pool as a user would set them up (onnxruntime: the
  global thread pool); the returned name is recorded as the measurement's ``thread_pool``.

A shipped module knows nothing of mtl_edge: it raises ``NotImplementedError`` for what it cannot take,
and ``load`` here maps that (and a missing runtime package) to ``mtl_edge.errors.Unsupported``.

Adding a runtime (ExecuTorch, say) is its module plus one ``register_runtime(Runtime(...))`` call; a
new artefact format adds its exporter too. ``get_runtime`` and ``for_format`` fail loudly on a name
or format nobody registered.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from mtl_edge import interrupts
from mtl_edge.errors import MtlEdgeError, Unsupported

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Runtime:
    """A registered runtime: its name, the artefact format it runs and the module file that drives it."""

    name: str
    format: str  # artefact format: "onnx", "tflite", "torch", ...
    file: Path  # the runtime module (numpy + the runtime only; shipped to devices)
    package: str  # the Python package it imports, named in "not installed" messages
    options: dict = field(default_factory=dict, compare=False)  # keyword arguments of version() / load()
    aliases: tuple[str, ...] = ()
    label: str = ""  # how messages name it ("the LiteRT interpreter"); default: the name

    @property
    def title(self) -> str:
        return self.label or self.name


_RUNTIMES: dict[str, Runtime] = {}
_ALIASES: dict[str, str] = {}
_MODULES: dict[str, ModuleType] = {}


def register_runtime(runtime: Runtime, replace: bool = False) -> Runtime:
    """Add ``runtime``; the first runtime registered for a format is that format's desktop runtime."""
    taken = [n for n in (runtime.name, *runtime.aliases) if n in _RUNTIMES or n in _ALIASES]
    if taken and not replace:
        raise MtlEdgeError(f"runtime name(s) {', '.join(taken)} already registered")
    _RUNTIMES[runtime.name] = runtime
    for alias in runtime.aliases:
        _ALIASES[alias] = runtime.name
    _MODULES.pop(runtime.name, None)
    return runtime


def unregister_runtime(name: str) -> None:
    rt = _RUNTIMES.pop(name, None)
    for alias in rt.aliases if rt else ():
        _ALIASES.pop(alias, None)
    _MODULES.pop(name, None)


def runtime_names() -> list[str]:
    return list(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """The runtime registered as ``name`` (or an alias of it); MtlEdgeError naming the known ones otherwise."""
    name = _ALIASES.get(name, name)
    if name not in _RUNTIMES:
        raise MtlEdgeError(f"unknown runtime {name!r}; choose from {', '.join(_RUNTIMES)}")
    return _RUNTIMES[name]


def for_format(fmt: str) -> Runtime:
    """The desktop runtime of an artefact format (the first one registered for it)."""
    for rt in _RUNTIMES.values():
        if rt.format == fmt:
            return rt
    known = sorted({rt.format for rt in _RUNTIMES.values()})
    raise MtlEdgeError(f"unknown artefact format {fmt!r} ({', '.join(known)})")


def module(runtime: Runtime | str) -> ModuleType:
    """The runtime's module, imported from its file (as the runner does on a device)."""
    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    if rt.name not in _MODULES:
        if not Path(rt.file).is_file():
            raise MtlEdgeError(f"runtime {rt.name}: its module file {rt.file} does not exist")
        spec = importlib.util.spec_from_file_location(f"mtl_edge_runtime_{rt.name.replace('-', '_')}", rt.file)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _MODULES[rt.name] = mod
    return _MODULES[rt.name]


def version(runtime: Runtime | str) -> str:
    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    before = interrupts.received()
    try:
        return module(rt).version(**rt.options)
    except ImportError as exc:
        raise _not_installed(rt, exc, before) from None


def _not_installed(rt: Runtime, exc: ImportError, sigints_before: int) -> Unsupported:
    interrupts.reraise_if_interrupted_since(sigints_before)  # a Ctrl-C inside the import, not a missing package
    return Unsupported(f"runtime {rt.name} is not installed here (python package {rt.package}: {exc})")


# Input values per runtime call in ``Loaded.run``: a whole test split of raw-waveform clips in one call
# (695 clips x 16,000 samples) made onnxruntime's static int8 graph of a 16-channel WaveNet hold 22 GB
# (killed by the kernel); a summary-feature split (1,000 values a row) still goes in one or two calls.
CALL_INPUT_ELEMENTS = 1_000_000


class Loaded:
    """An artefact loaded by its runtime, run in this process on whole arrays."""

    def __init__(self, runtime: Runtime, model, path: Path):
        self.runtime, self.model, self.path = runtime, model, path

    @property
    def input_names(self) -> list[str]:
        return list(self.model.input_names)

    @property
    def output_names(self) -> list[str]:
        try:
            return list(self.model.output_names)
        except Exception as exc:  # noqa: BLE001 - a runtime's own failure, named with the file
            raise MtlEdgeError(f"{self.path}: {self.runtime.title} cannot list its outputs: {_first(exc)}") from None

    def _feed(self, inputs) -> dict:
        if isinstance(inputs, dict):
            return inputs
        (name,) = self.model.input_names[:1] or ["input"]
        return {name: inputs}

    def call(self, inputs) -> dict[str, np.ndarray]:
        """One runtime call on ``inputs`` (an array for the first input, or ``{input name: array}``)."""
        m = self.model
        return m.named(m.call(m.prepare(self._feed(inputs))))

    def run(self, inputs) -> dict[str, np.ndarray]:
        """All rows of ``inputs``; a graph with a fixed batch of 1 is run row by row, one with any batch in
        calls of at most ``CALL_INPUT_ELEMENTS`` input values (see there)."""
        feed = self._feed(inputs)
        rows = len(next(iter(feed.values())))
        batch = self.model.batch
        if batch is None or batch <= 0:
            per_row = max(1, sum(int(np.prod(np.shape(v)[1:])) for v in feed.values()))
            step = max(1, CALL_INPUT_ELEMENTS // per_row)
        elif batch == rows:
            step = rows
        elif batch == 1:
            step = 1
        else:
            raise MtlEdgeError(f"{self.path}: fixed batch {batch} does not divide {rows} rows")
        if rows <= step:
            return self.call(feed)
        parts = [self.call({k: v[i:i + step] for k, v in feed.items()}) for i in range(0, rows, step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    __call__ = run


def _first(exc: BaseException) -> str:
    return (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]


def load(runtime: Runtime | str, path: str | Path, threads: int = 1) -> Loaded:
    """Load ``path`` with ``runtime``: Unsupported when it is not installed or cannot take the artefact."""
    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    before = interrupts.received()
    try:
        mod = module(rt)
        model = mod.load(str(path), threads, **rt.options)
    except ImportError as exc:
        raise _not_installed(rt, exc, before) from None
    except NotImplementedError as exc:
        raise Unsupported(f"{path}: {rt.title} cannot take it: {_first(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - the runtime's own load error, named with the file
        raise MtlEdgeError(f"{path}: {rt.title} cannot load it: {_first(exc)}") from None
    return Loaded(rt, model, Path(path))


def load_format(fmt: str, path: str | Path, threads: int = 1) -> Loaded:
    """Load ``path`` with the desktop runtime of its artefact format."""
    return load(for_format(fmt), path, threads)


def runner_file() -> Path:
    """The standalone runner script shipped with the runtime modules."""
    return _HERE / "runner.py"


register_runtime(Runtime("onnxruntime", "onnx", _HERE / "rt_onnxruntime.py", "onnxruntime", aliases=("ort",)))
register_runtime(Runtime("litert", "tflite", _HERE / "rt_litert.py", "ai-edge-litert",
                         {"package": "ai-edge-litert"}, aliases=("tflite", "ai-edge-litert"),
                         label="the LiteRT interpreter"))
register_runtime(Runtime("tflite-runtime", "tflite", _HERE / "rt_litert.py", "tflite-runtime",
                         {"package": "tflite-runtime"}, aliases=("tflite_runtime",),
                         label="the tflite-runtime interpreter"))
register_runtime(Runtime("torch", "torch", _HERE / "rt_torch.py", "torch", aliases=("pytorch", "torchscript"),
                         label="torch.jit.load"))
