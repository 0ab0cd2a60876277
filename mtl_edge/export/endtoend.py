"""Waveform in, answers out: the training front-end and the network as one exported graph per format.

A device runs from audio, so besides the ``features``-in artefacts an export can hold one graph per
format that takes the clip itself: ``waveform`` [batch, samples] float32 at the feature config's
sample rate -> log-mel filter banks -> summary statistics -> the network -> ``{task: logits}``. The
front-end is ``mtl_edge.features.torch_frontend.FrontEnd``, the torch twin of ``logmel.extract``.

The clip length is fixed when the graph is built (``n_samples``, taken from the corpus clips: the
test split's waveforms, all of one length). A device pads or crops its audio to that length as the
corpus clips were. The export measures the front-end's agreement with ``logmel.extract`` on the test
split with each format's runtime (``frontend_parity`` in the manifest).

Artefacts (``EndToEnd.builder``): ONNX fp32 is the whole graph exported by torch.onnx; ONNX fp16 /
int8 are the float32 front-end composed with the multi-task network artefact of that precision
(quantising the front-end makes no sense: its power spectrum spans ~1e-10..1e4); TFLite fp32 and fp16
(float16 weights) convert whole; TFLite int8 is recorded unsupported with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtl_edge.errors import MtlEdgeError
from mtl_edge.features.torch_frontend import FrontEnd
from mtl_edge.features.logmel import FeatureConfig

WAVEFORM = "waveform"


class EndToEndGraph(nn.Module):
    """``forward(waveform) -> {task: logits}``: the front-end, then an ``ExportGraph`` (same outputs)."""

    def __init__(self, frontend: FrontEnd, graph: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.network = graph  # not `graph`: an fx GraphModule's own attribute (torch.export unlifting breaks)
        self.tasks = list(graph.tasks)
        self.eval()

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.network(self.frontend(waveform))


# -- data ---------------------------------------------------------------------------------------------------

def load_waveforms(corpus: str | Path, paths: list[str], cfg: FeatureConfig) -> np.ndarray:
    """The clips ``paths`` (relative to the corpus root) at ``cfg.sample_rate``, float32 [N, samples].

    Loaded as the feature cache loads them (mono, resampled). The end-to-end graph has one clip
    length, so every clip must have it: MtlEdgeError naming the lengths otherwise.
    """
    from mtl_edge.data.audio import load_audio
    from mtl_edge.data.manifest import read_manifest as read_corpus_manifest

    root = read_corpus_manifest(corpus, check_files=False).root
    clips = [load_audio(root / rel, target_rate=cfg.sample_rate).samples for rel in paths]
    lengths = sorted({len(c) for c in clips})
    if len(lengths) != 1:
        shown = ", ".join(str(n) for n in lengths[:5]) + (" ..." if len(lengths) > 5 else "")
        raise MtlEdgeError(f"the end-to-end export needs clips of one length (the graph's input is [batch, samples]); "
                           f"the test split of {corpus} has {len(lengths)} lengths ({shown} samples at "
                           f"{cfg.sample_rate} Hz)")
    return np.ascontiguousarray(np.stack(clips), dtype=np.float32)


def parity(features: np.ndarray, reference: np.ndarray, names: list[str] | None = None) -> dict:
    """How far ``features`` are from the training front-end's ``reference`` ([N, F] each).

    ``max_abs_diff``; ``max_rel_diff`` = max |diff| / max(|reference|, 1) (relative for large
    values, absolute near 0, where skew and mean differences live); ``max_scaled_diff`` = max |diff|
    over the feature's standard deviation on these clips (the units the network sees).
    """
    got = np.asarray(features, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if got.shape != ref.shape:
        return {"rows": int(len(ref)), "error": f"shape {list(got.shape)} != {list(ref.shape)}"}
    diff = np.abs(got - ref)
    if not np.isfinite(diff).all():
        return {"rows": int(len(ref)), "error": "non-finite features"}
    scale = ref.std(axis=0)
    scaled = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
    worst = int(diff.max(axis=0).argmax()) if diff.size else 0
    return {"rows": int(len(ref)), "max_abs_diff": float(diff.max(initial=0.0)),
            "max_rel_diff": float((diff / np.maximum(np.abs(ref), 1.0)).max(initial=0.0)),
            "max_scaled_diff": float(scaled.max(initial=0.0)),
            "worst_feature": names[worst] if names and diff.size else None}


# -- building the artefacts ----------------------------------------------------------------------------------

_TFLITE_UNSUPPORTED = {
    "int8-dynamic": ("tflite int8-dynamic of the end-to-end graph: litert-torch's dynamic-range quantisation "
                     "takes every FULLY_CONNECTED weight, the front-end's DFT, mel and DCT matrices included "
                     "(an 8-bit spectrum: meaningless log-mel features); the network alone is the multi "
                     "tflite int8-dynamic artefact, with the front-end in float (this graph at fp32, or numpy)"),
    "int8": ("tflite int8 of the end-to-end graph: static int8 would quantise the front-end's activations (a "
             "power spectrum spanning ~1e-10..1e4, then its log: no int8 scale holds it), and litert-torch "
             "0.10.0 cannot restrict PT2E quantisation to the network (its QuantConfig needs a global config); "
             "the network alone is the multi tflite int8 artefact, with the front-end in float"),
}


class EndToEnd:
    """The waveform-in artefacts of one model: the graph, the reference features and the builders.

    ``waveforms`` are the test split's clips; ``features`` is ``logmel.extract_batch`` of them (the
    training front-end), the reference for the front-end parity and, through the PyTorch model, for
    the logits.
    """

    def __init__(self, cfg: FeatureConfig, network: nn.Module, waveforms: np.ndarray, workdir: Path):
        from mtl_edge.features.logmel import extract_batch, feature_names

        self.cfg = cfg
        self.n_samples = int(waveforms.shape[1])
        self.frontend = FrontEnd(cfg, self.n_samples)
        self.graph = EndToEndGraph(self.frontend, network)
        self.tasks = self.graph.tasks
        self.workdir = Path(workdir)
        self.names = feature_names(cfg)
        self.features = extract_batch(waveforms, cfg)
        self.waveforms = waveforms
        with torch.no_grad():
            self.torch_features = self.frontend(torch.from_numpy(waveforms)).numpy()
        self.torch_parity = parity(self.torch_features, self.features, self.names)
        self._parity: dict[tuple[str, str], dict] = {}

    def input_record(self) -> dict:
        return {"name": WAVEFORM, "dtype": "float32", "shape": ["batch", self.n_samples], "samples": self.n_samples,
                "sample_rate": self.cfg.sample_rate,
                "description": "mono clip at sample_rate, exactly `samples` long (the corpus clips' length); "
                               "the graph computes the log-mel summary features itself"}

    def builder(self, fmt: str, folder: Path, network_entries: dict[str, dict]):
        """An object with the onnx/tflite modules' ``EXTENSION`` and ``build`` for this graph.

        ``network_entries``: the multi-task model's manifest entries of ``fmt`` by precision (the
        ONNX fp16 / int8 graphs are the fp32 front-end composed with those artefacts).
        """
        if fmt == "onnx":
            return _OnnxBuilder(self, folder, network_entries)
        if fmt == "tflite":
            return _TfliteBuilder(self)
        raise MtlEdgeError(f"no end-to-end {fmt} artefacts (onnx and tflite only)")

    # the front-end alone, exported like the artefact's front-end and run by the same runtime
    def frontend_parity(self, fmt: str, precision: str) -> dict:
        """Parity of the artefact's front-end with ``logmel.extract_batch``, measured by the real runtime.

        The front-end is exported alone in the artefact's format (the same module, at the precision
        its front-end has in the artefact) and run on the test waveforms.
        """
        from mtl_edge.export.runtime import runners

        key = (fmt, "fp16" if (fmt, precision) == ("tflite", "fp16") else "fp32")
        if key not in self._parity:
            try:
                run, _ = runners(fmt, self._frontend_artefact(*key))
                (features,) = run(self.waveforms).values()
            except Exception as exc:  # the whole graph converted, so this should not happen; say so if it does
                from mtl_edge.export.graph import converter_message

                self._parity[key] = {"rows": len(self.features), "error": f"the front-end alone did not export "
                                     f"or run: {converter_message(exc)}"}
                return self._parity[key]
            self._parity[key] = {**parity(features, self.features, self.names),
                                 "measured_on": f"the front-end alone, {fmt} {key[1]} weights, run by "
                                                f"{'onnxruntime' if fmt == 'onnx' else 'ai-edge-litert'}"}
        return self._parity[key]

    def _frontend_artefact(self, fmt: str, precision: str) -> Path:
        if fmt == "onnx":
            path = self.workdir / "e2e-frontend.fp32.onnx"
            if not path.exists():
                _onnx_export(self.frontend, self.n_samples, path, ["features"])
            return path
        path = self.workdir / f"e2e-frontend.{precision}.tflite"
        if not path.exists():
            base = self.workdir / "e2e-frontend.fp32.tflite"
            if not base.exists():
                _tflite_convert(self.frontend, self.n_samples, base)
            if precision == "fp16":
                from mtl_edge.export import tflite as tflite_export

                with tflite_export._quiet():
                    tflite_export._fp16(base, path)
        return path


def _onnx_export(module: nn.Module, n_samples: int, path: Path, outputs: list[str]) -> None:
    from mtl_edge.export import onnx as onnx_export

    with onnx_export._quiet():
        torch.onnx.export(module, (torch.zeros(2, n_samples),), str(path), dynamo=True, external_data=False,
                          input_names=[WAVEFORM], output_names=outputs,
                          dynamic_shapes={WAVEFORM: {0: torch.export.Dim("batch")}})


def _tflite_convert(module: nn.Module, n_samples: int, path: Path) -> None:
    import litert_torch

    from mtl_edge.export import tflite as tflite_export

    with tflite_export._quiet():
        edge = litert_torch.convert(module, sample_kwargs={WAVEFORM: torch.zeros(tflite_export.BATCH, n_samples)})
        edge.export(str(path))


def _toposort(graph) -> None:
    """Order an ONNX graph's nodes so each follows its inputs' producers (float16 conversion appends
    its input Cast last, which onnxruntime tolerates but ``onnx.compose`` does not)."""
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise MtlEdgeError(f"onnx graph {graph.name!r} has a cycle or an undefined input")
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
        for n in ready:
            ordered.append(n)
            known.update(n.output)
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


class _OnnxBuilder:
    """fp32: the end-to-end graph exported in one piece by torch.onnx; fp16 / int8-dynamic / int8: the
    fp32 front-end composed (``onnx.compose``) with the multi-task network artefact of that precision,
    so the front-end stays float32 and the network is exactly the verified features-in artefact."""

    EXTENSION = ".onnx"

    def __init__(self, e2e: EndToEnd, folder: Path, network_entries: dict[str, dict]):
        self.e2e, self.folder, self.network_entries = e2e, folder, network_entries

    def build(self, graph, input_dim, precision, path, workdir, label, calibration=None, per_channel=True) -> dict:
        from mtl_edge.export import onnx as onnx_export
        from mtl_edge.export.graph import converter_message
        from mtl_edge.errors import Unsupported

        if precision == "fp32":
            try:
                _onnx_export(graph, input_dim, path, list(graph.tasks))
            except Exception as exc:
                raise Unsupported(f"onnx export of the end-to-end graph failed (an op ONNX cannot take?): "
                                  f"{converter_message(exc)}") from None
            frontend = "float32"
            quant = {"scheme": "none", "per_channel": None, "calibration": None}
            network = None
        else:
            net = self.network_entries.get(precision)
            if net is None or net.get("status") == "unsupported" or not net.get("path"):
                why = "not exported" if net is None else f"unsupported: {net.get('reason')}"
                raise Unsupported(f"onnx {precision} end-to-end graph: no multi onnx {precision} network artefact to "
                                  f"compose with ({why})")
            try:
                _compose(self.e2e._frontend_artefact("onnx", "fp32"), self.folder / net["path"], path)
            except MtlEdgeError:
                raise
            except Exception as exc:
                raise Unsupported(f"onnx {precision} end-to-end graph: composing the front-end with "
                                  f"{net['path']} failed: {converter_message(exc)}") from None
            frontend = "float32"
            network = net["path"]
            q = net.get("quantization") or {}
            quant = {"scheme": f"front-end float32; network: {q.get('scheme', 'none')}",
                     "per_channel": q.get("per_channel"), "calibration": None}
        return {"quantization": quant, "frontend_precision": frontend, "network_artefact": network,
                **onnx_export.describe(path)}


def _compose(frontend: Path, network: Path, path: Path) -> None:
    import onnx
    from onnx import compose

    fe = compose.add_prefix(onnx.load(str(frontend)), "frontend/", rename_inputs=False, rename_outputs=False)
    net = onnx.load(str(network))
    _toposort(net.graph)
    fe.ir_version = net.ir_version = max(fe.ir_version, net.ir_version)
    merged = compose.merge_models(fe, net, io_map=[("features", "features")], producer_name="mtl-edge",
                                  doc_string="waveform -> log-mel summary features (float32) -> multi-task network")
    onnx.save(merged, str(path))


class _TfliteBuilder:
    """fp32: litert-torch conversion of the end-to-end graph; fp16: ai-edge-quantizer float casting of
    its FULLY_CONNECTED weights (the front-end's DFT / mel / DCT matrices too; compute stays float32);
    int8-dynamic / int8: unsupported (see ``_TFLITE_UNSUPPORTED``)."""

    EXTENSION = ".tflite"

    def __init__(self, e2e: EndToEnd):
        self.e2e = e2e

    def build(self, graph, input_dim, precision, path, workdir, label, calibration=None, per_channel=True) -> dict:
        from mtl_edge.export import tflite as tflite_export
        from mtl_edge.export.graph import converter_message
        from mtl_edge.errors import Unsupported

        if precision in _TFLITE_UNSUPPORTED:
            raise Unsupported(_TFLITE_UNSUPPORTED[precision])
        base = Path(workdir) / "e2e-multi.fp32.tflite"
        if not base.exists():
            try:
                _tflite_convert(graph, input_dim, base)
            except Exception as exc:
                base.unlink(missing_ok=True)
                raise Unsupported(f"tflite conversion of the end-to-end graph failed (an op LiteRT cannot take?): "
                                  f"{converter_message(exc)}") from None
        if precision == "fp32":
            path.write_bytes(base.read_bytes())
            frontend = "float32"
            quant = {"scheme": "none", "per_channel": None, "calibration": None}
        elif precision == "fp16":
            try:
                with tflite_export._quiet():
                    tflite_export._fp16(base, path)
            except Exception as exc:
                raise Unsupported(f"tflite fp16 (ai-edge-quantizer float casting) of the end-to-end graph failed: "
                                  f"{converter_message(exc)}") from None
            frontend = "float16 weights (DFT, mel, DCT matrices), float32 compute"
            quant = {"scheme": "float16 weights (ai-edge-quantizer FLOAT_CASTING), front-end matrices included; "
                               "float32 compute", "per_channel": None, "calibration": None}
        else:
            raise MtlEdgeError(f"unknown precision {precision!r}")
        return {"quantization": quant, "frontend_precision": frontend, "network_artefact": None,
                **tflite_export.describe(path)}
