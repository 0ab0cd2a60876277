"""The Ray executor: every run of a sweep is a Ray task, on a running cluster or a local instance.

``--address`` (else ``RAY_ADDRESS``) joins a cluster started with ``ray start --head`` /
``ray start --address=...``; with neither, a local Ray instance with ``workers`` CPUs is started and
stopped again. A task is ``run_job`` itself, so a run trains exactly as a local worker trains it
(same seed, one torch thread: the results are identical whichever executor ran them) and writes its
folder directly: the corpus, the feature cache and the sweep folder must be on storage that every
node sees under the same path (one machine, or a shared filesystem).

At most ``workers`` runs are in flight. A run whose worker is lost (a node went away, the process
was killed) is retried by Ray from its last epoch (``state.pt``); after the retries it is recorded
as failed like any other failure. Ctrl-C cancels the runs in flight: they are unfinished, and the
same command trains them again.
"""

from __future__ import annotations

import os
import socket

from mtl_edge.errors import MtlEdgeError
from mtl_edge.research.runs import RunJob, record_lost, run_job

RETRIES_OF_A_LOST_WORKER = 2
CONNECT_TIMEOUT_S = 5.0


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``--address``, else ``RAY_ADDRESS``, else None (a local instance)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str) -> None:
    """Fail fast, before anything is written, when nothing listens at a ``host:port`` address.

    ``ray.init`` would otherwise retry for a minute and then raise a long ConnectionError."""
    target = address.removeprefix("ray://")
    if address in ("auto", "local") or ":" not in target:
        return  # Ray resolves these itself ("auto": the cluster `ray start` recorded on this machine)
    host, _, port = target.rpartition(":")
    if not port.isdigit():
        raise MtlEdgeError(f"Ray address {address!r} is not host:port (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise MtlEdgeError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one with "
                           f"`ray start --head --port={port}` or give the head's address; nothing was trained") from None


def check_executor(address: str | None) -> None:
    """Before a sweep writes anything: ray is installed and the cluster, if one is named, answers."""
    _ray()
    address = cluster_address(address)
    if address:
        check_reachable(address)


def _ray():
    try:
        import ray
    except ImportError:
        raise MtlEdgeError("the Ray executor needs ray: pip install 'mtl-edge[ray]'") from None
    return ray


def run_ray(jobs: list[RunJob], *, workers: int, on_start, on_finish, address: str | None = None) -> None:
    """Train ``jobs`` as Ray tasks, ``workers`` at a time; see the module docstring."""
    import logging

    ray = _ray()
    address = cluster_address(address)
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        hint = (" (a cluster with token authentication needs its token: RAY_AUTH_TOKEN or ~/.ray/auth_token)"
                if address else "")
        raise MtlEdgeError(f"cannot join the Ray cluster at {address or 'a local instance'}: {exc}{hint}") from None
    try:
        train = ray.remote(num_cpus=1, max_retries=RETRIES_OF_A_LOST_WORKER)(run_job)
        queue, running = list(jobs), {}
        try:
            while queue or running:
                while queue and len(running) < workers:
                    job = queue.pop(0)
                    running[train.remote(job)] = job
                    on_start(job.spec)
                done, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
                for ref in done:
                    job = running.pop(ref)
                    try:
                        status = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker was lost more often than retried
                        status = record_lost(job, f"Ray task failed: {type(exc).__name__}: {exc}")
                    on_finish(job.spec, status)
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
    finally:
        ray.shutdown()
