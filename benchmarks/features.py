"""Feature-extraction throughput: mtl-edge's prepare stage vs a naive per-file librosa loop.

Both run on the same real audio in the same process, one core (BLAS/OpenMP threads pinned to 1),
and are reported as "x real time per core": seconds of audio processed per wall-clock second.

Audio: 1 s clips of words spoken by espeak-ng (several voices and rates) and of the
freedesktop sound-theme recordings, written as 16 kHz 16-bit WAV into a temporary corpus.

    .venv/bin/python benchmarks/features.py [--clips N] [--repeats R] [--out benchmarks/results/features.json]
        [--allow-busy]

Above a 1-minute load of 0.5 it refuses to write a result under benchmarks/results/ unless --allow-busy.
"""

from __future__ import annotations

import os

# One core means one core: pin the math libraries before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
         "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("en-us", "en", "en-us+f3", "en+m3", "de", "fr")
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
CLIP = 16_000


def build_corpus(folder: Path, n_clips: int) -> Path:
    """A corpus of ``n_clips`` real 1 s clips (manifest + 16 kHz WAVs); returns its folder."""
    from mtl_edge.data.audio import load_audio, write_wav
    from mtl_edge.data.manifest import Row, make_manifest

    exe = shutil.which("espeak-ng")
    recordings = sorted(FREEDESKTOP.glob("*.oga")) if FREEDESKTOP.is_dir() else []
    if exe is None and not recordings:
        sys.exit("need espeak-ng or sound-theme-freedesktop for real audio (make setup installs both)")
    (folder / "audio").mkdir(parents=True)
    raw = folder / "raw"
    raw.mkdir()
    rows = []
    for i in range(n_clips):
        use_recording = exe is None or (recordings and i % 5 == 4)  # 1 in 5 clips is a recording
        if use_recording:
            src = recordings[(i // 5) % len(recordings)]
            label = "recording"
        else:
            word, voice = WORDS[i % len(WORDS)], VOICES[(i // len(WORDS)) % len(VOICES)]
            src = raw / f"{i:05d}.wav"
            rate = 130 + 10 * (i % 7)
            subprocess.run([exe, "-v", voice, "-s", str(rate), "-w", str(src), word], check=True)
            label = word
        with warnings.catch_warnings():  # two recordings are 8 kHz: upsampled, fine for timing
            warnings.simplefilter("ignore")
            x = load_audio(src).samples
        start = max(0, (len(x) - CLIP) // 2)
        x = np.pad(x[start:start + CLIP], (0, max(0, CLIP - len(x[start:start + CLIP]))))
        rel = f"audio/{i:05d}.wav"
        write_wav(folder / rel, x)
        rows.append(Row(rel, "kws", label, "train"))
    shutil.rmtree(raw)
    make_manifest(folder, rows).write(folder)
    return folder


def naive_features(path: Path, cfg) -> np.ndarray:
    """The baseline: what one would write first, file by file with librosa and scipy (load, melspectrogram,
    log, then each statistic straight from its definition). Frozen here, independent of mtl-edge's code, so
    that making mtl-edge faster cannot make the baseline faster too; ``main`` checks that it computes the
    same vector as mtl-edge (the default FeatureConfig: per-band statistics, onset-aligned segments,
    cepstral summaries)."""
    import librosa
    import scipy.fft
    import scipy.stats

    y, _ = librosa.load(str(path), sr=16000)
    s = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=cfg.fft_size, hop_length=cfg.hop_length,
                                       win_length=cfg.win_length, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    x = np.log(np.maximum(s, cfg.floor)).astype(np.float64)  # (n_mels, frames)
    feats = []
    for stat in cfg.stats:
        if stat == "mean":
            feats.append(x.mean(axis=1))
        elif stat == "std":
            feats.append(x.std(axis=1))
        elif stat == "min":
            feats.append(x.min(axis=1))
        elif stat == "max":
            feats.append(x.max(axis=1))
        elif stat == "median":
            feats.append(np.median(x, axis=1))
        elif stat.startswith("p"):
            feats.append(np.percentile(x, float(stat[1:]), axis=1))
        elif stat == "skew":
            feats.append(np.nan_to_num(scipy.stats.skew(x, axis=1)))
        elif stat == "kurt":
            feats.append(np.nan_to_num(scipy.stats.kurtosis(x, axis=1)))
        elif stat == "dmeanabs":
            feats.append(np.abs(np.diff(x, axis=1)).mean(axis=1))
        elif stat == "dstd":
            feats.append(np.diff(x, axis=1).std(axis=1))
        elif stat == "dmean":
            feats.append(np.diff(x, axis=1).mean(axis=1))
    if cfg.segments:
        start, end = 0, x.shape[1]
        if cfg.align_db is not None:  # the run of loud frames around the loudest one, short dips bridged
            energy = np.log(np.exp(x).mean(axis=0))
            threshold = energy.max() - cfg.align_db * np.log(10.0) / 10.0
            peak = int(np.argmax(energy))
            start = end = peak
            for step in (-1, 1):
                i, quiet = peak, 0
                while 0 <= i + step < len(energy):
                    i += step
                    if energy[i] >= threshold:
                        quiet = 0
                        start, end = (i, end) if step < 0 else (start, i)
                    else:
                        quiet += 1
                        if quiet > cfg.align_gap_frames:
                            break
            end += 1
        n = end - start
        for k in range(cfg.segments):
            lo = min(k * n // cfg.segments, n - 1)
            hi = max(lo + 1, (k + 1) * n // cfg.segments)
            seg = x[:, start + lo:start + hi]
            for stat in cfg.segment_stats:
                feats.append(getattr(seg, stat)(axis=1))
    if cfg.n_cepstra:
        cep = scipy.fft.dct(x, type=2, norm="ortho", axis=0)[:cfg.n_cepstra]
        for stat in cfg.cepstral_stats:
            if stat in ("dmeanabs", "dstd", "dmean"):
                d = np.diff(cep, axis=1)
                feats.append(np.abs(d).mean(axis=1) if stat == "dmeanabs" else getattr(d, stat[1:])(axis=1))
            else:
                feats.append(getattr(cep, stat)(axis=1))
    return np.concatenate(feats).astype(np.float32)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and its CPU time over ``repeats`` runs (after one warm-up run)."""
    fn()
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        best = min(best, (wall, cpu))
    return best


def machine() -> dict:
    import librosa
    import scipy
    import soundfile
    import soxr

    from mtl_edge.bench.environment import local_environment

    return {
        **local_environment(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "librosa": librosa.__version__,
        "soundfile": soundfile.__version__,
        "soxr": soxr.__version__,
        "threads_per_process": 1,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=300, help="number of 1 s clips (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method; the best is kept")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    parser.add_argument("--allow-busy", action="store_true",
                        help="write a committed result even when the 1-minute load is above 0.5 (recorded)")
    args = parser.parse_args(argv)

    from mtl_edge.bench.load import gate, local_load, script_argv

    started = gate(args.allow_busy, "features.py", args.out)

    from mtl_edge.data.audio import load_audio
    from mtl_edge.data.manifest import read_manifest
    from mtl_edge.features.cache import prepare_features
    from mtl_edge.features.logmel import FeatureConfig, extract_batch

    cfg = FeatureConfig()
    with tempfile.TemporaryDirectory(prefix="mtl-edge-bench-") as tmp:
        corpus = build_corpus(Path(tmp) / "corpus", args.clips)
        files = [corpus / p for p in sorted({r.path for r in read_manifest(corpus).rows})]
        seconds_audio = sum(len(load_audio(f).samples) for f in files) / 16000
        runs = iter(range(10**6))

        def mtl_edge_prepare():
            table = prepare_features(corpus, cfg, cache_dir=Path(tmp) / f"cache{next(runs)}", progress=False)
            assert table.features.shape == (len(files), cfg.n_features)

        clips = np.stack([load_audio(f).samples for f in files])

        def mtl_edge_features_only():
            extract_batch(clips, cfg)

        def naive_loop():
            out = [naive_features(f, cfg) for f in files]
            assert len(out[0]) == cfg.n_features
            return np.stack(out)

        # the two compute the same features: else the comparison would mean nothing
        same = np.abs(naive_loop() - extract_batch(clips, cfg))
        scale = np.abs(extract_batch(clips, cfg)).max(axis=0) + 1.0
        agreement = {"max_abs_difference": round(float(same.max()), 6),
                     "max_relative_difference": round(float((same / scale).max()), 6)}
        if agreement["max_relative_difference"] > 1e-3:
            sys.exit(f"the naive baseline and mtl-edge disagree: {agreement}")

        results = {}
        for name, fn, what in (
            ("mtl_edge_prepare", mtl_edge_prepare,
             "prepare_features(workers=1): manifest, fingerprint, decode, features, memmap cache write"),
            ("naive_librosa_loop", naive_loop,
             "per file: librosa.load(sr=16000) + librosa.feature.melspectrogram + the same statistics from "
             "their definitions (numpy/scipy; frozen in this script)"),
            ("mtl_edge_features_only", mtl_edge_features_only,
             "extract_batch on clips already in memory (no decoding, no I/O)"),
        ):
            wall, cpu = timed(fn, args.repeats)
            results[name] = {
                "what": what,
                "wall_s": round(wall, 4),
                "cpu_s": round(cpu, 4),
                "seconds_audio": round(seconds_audio, 3),
                "x_realtime_per_core": round(seconds_audio / wall, 1),
            }
            print(f"{name:24s} {seconds_audio:8.1f} s audio in {wall:7.3f} s wall -> "
                  f"{seconds_audio / wall:8.1f} x real time per core", file=sys.stderr)

    report = {
        "benchmark": "feature extraction throughput, one process, one thread",
        "argv": script_argv(None if argv is None else [sys.argv[0], *argv]),
        **started, "load_1m_at_end": local_load()[0],
        "clips": len(files),
        "clip_seconds": CLIP / 16000,
        "repeats": args.repeats,
        "feature_config": cfg.to_json(),
        "n_features": cfg.n_features,
        "results": results,
        "baseline_agreement": agreement,
        "speedup_prepare_vs_naive": round(
            results["mtl_edge_prepare"]["x_realtime_per_core"] / results["naive_librosa_loop"]["x_realtime_per_core"], 2
        ),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    if args.out:
        from mtl_edge import atomic

        atomic.write_text(args.out, text)
    print(text, end="")
    return report


if __name__ == "__main__":
    main()
