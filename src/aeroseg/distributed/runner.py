"""The Ray side of a distributed prediction: the workers, the scheduling of units and the fault handling.

Each worker is a Ray actor (:class:`Segmenter`) that loads the model once and runs units, writing their
files itself (:func:`aeroseg.distributed.parts.run_unit`), and finishes the scenes whose parts are all
written (:func:`aeroseg.distributed.scenes.finish_scene`). It takes one GPU when the cluster has GPUs (and
``--device`` is not cpu), else ``threads`` CPUs and as many torch threads. The driver keeps
:data:`IN_FLIGHT` tasks queued on every worker; only pixel counts come back. A task whose worker dies
(killed, out of memory, node lost) goes back to the queue and runs on another worker; the dead worker is
replaced. After :data:`ATTEMPTS` lost runs the task, and its scene, fail.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
import torch
from rasterio.errors import RasterioError
from ray.exceptions import (
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    RayActorError,
    RayTaskError,
    WorkerCrashedError,
)

from aeroseg.distributed.parts import Job, Scene, run_unit
from aeroseg.distributed.scenes import finish_scene
from aeroseg.distributed.session import NAMESPACE
from aeroseg.errors import UserError
from aeroseg.progress import progress
from aeroseg.raster import one_line
from aeroseg.registry import ModelRequest, segmenter

LOST = (RayActorError, WorkerCrashedError, OutOfMemoryError, ObjectLostError, NodeDiedError)
ATTEMPTS = 3  # runs of a unit lost with their worker before the unit fails
IN_FLIGHT = 2  # tasks queued on each worker, so that none waits for the driver
FINISH = -1  # the task that finishes a scene of several units once its parts are written


@dataclass(frozen=True)
class Cluster:
    """Where the units run: a Ray address and the shape of the workers."""

    address: str = "auto"  # auto: a running cluster, else a local one; local: a new local one; or ADDRESS
    workers: int | None = None  # None: one per GPU, or on CPUs one per ``threads`` CPUs
    threads: int = 4  # CPUs and torch threads of a CPU worker
    device: str = "auto"  # auto: GPUs when the cluster has them; cpu; cuda


@dataclass
class Stats:
    """Counts of a run, for the summary."""

    workers: int = 0
    units: int = 0  # units run
    reused: int = 0  # units whose part an earlier run had saved
    windows: int = 0
    retried: int = 0
    failed: int = 0
    seconds: float = 0.0


@ray.remote
class Segmenter:
    """A worker: the model, loaded once, and the units it runs."""

    def __init__(self, model: Any, device: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.error: str | None = None
        try:
            if isinstance(model, dict):  # a model request (checkpoint or preset) to load
                self.model = segmenter(ModelRequest(**model), self.device)
            else:
                self.model = model.to(self.device).eval()
        except UserError as error:
            self.error = str(error)

    def ready(self) -> str | None:
        """None when the model is loaded, else the one-line error."""
        return self.error

    def run(self, scene: Scene, unit: int, job: Job) -> dict[str, Any]:
        """Run ``unit`` of ``scene`` (or finish it: :data:`FINISH`); its pixel counts, or the error."""
        try:
            if unit == FINISH:
                finish_scene(scene, job)
                return {}
            return {"counts": run_unit(self.model, scene, unit, job, self.device)}
        except UserError as error:
            return {"error": str(error)}
        except (RasterioError, OSError) as error:
            return {"error": f"{scene.path}: {one_line(error)}"}


def run_units(
    scenes: Iterable[Scene],
    job: Job,
    model: Any,
    cluster: Cluster,
    *,
    quiet: bool,
    on_scene: Callable[[Scene], None],
) -> Stats:
    """Run every unit of ``scenes`` not written yet and finish the scenes; ``on_scene`` gets each scene once
    its files are written (or once it failed: ``scene.failed`` holds the one-line reason). The scenes are
    taken from ``scenes`` as the workers need work, so that a long list is never planned all at once."""
    start = time.perf_counter()
    work = _Work(iter(scenes))
    work.refill(1)
    if not work.queue:
        return work.stats
    pool = _pool(model, cluster)
    work.stats.workers = len(pool.workers)
    try:  # an interrupted run leaves a CLI model's workers to the next run of this process
        _schedule(work, pool, job, quiet, on_scene)
    finally:
        if not isinstance(model, dict):  # a model object is not kept on the workers after the call
            pool.close()
    work.stats.seconds = time.perf_counter() - start
    return work.stats


class _Work:
    """The tasks to run: those of the scenes planned so far, more planned as the queue runs low."""

    def __init__(self, scenes: Iterator[Scene]) -> None:
        self.scenes, self.queue, self.stats = scenes, deque[tuple[Scene, int]](), Stats()
        self.planned_windows = 0  # windows of the units queued so far (the progress bar's total)

    def refill(self, tasks: int) -> None:
        """Plan scenes until the queue holds ``tasks`` tasks or no scene is left."""
        while len(self.queue) < tasks:
            scene = next(self.scenes, None)
            if scene is None:
                return
            self.stats.reused += len(scene.done)
            todo = [u for u in range(len(scene.bands)) if u not in scene.done] or [FINISH]
            self.queue.extend((scene, u) for u in todo)
            self.planned_windows += sum(scene.windows[u] for u in todo if u != FINISH)


class _Pool:
    """The workers of one model and layout. A CLI model's pool is kept for later runs of this process."""

    def __init__(self, model: Any, cluster: Cluster, key: str | None) -> None:
        count, self.resources, self.device = _layout(cluster)
        self.spec = model if isinstance(model, dict) else ray.put(model)
        self.threads, self.key, self.started = cluster.threads, key, 0
        self.run_id, self.session = uuid.uuid4().hex[:8], _session()
        self.starting: dict[Any, int] = {}  # readiness of the workers still loading the model -> slot
        self.workers = [self._start(slot) for slot in range(count)]

    def _start(self, slot: int) -> Any:
        self.started += 1
        name = f"segmenter-{self.run_id}-{self.started}"
        options = dict(name=name, namespace=NAMESPACE, **self.resources)
        worker = Segmenter.options(**options).remote(self.spec, self.device, self.threads)
        self.starting[worker.ready.remote()] = slot
        return worker

    def started_up(self, ready: Any) -> None:
        """A worker finished loading the model (or failed to: a one-line :class:`UserError`)."""
        slot = self.starting.pop(ready)
        try:
            error = ray.get(ready)
        except LOST:
            self.workers[slot] = self._start(slot)
            return
        if error:
            self.close()
            raise UserError(error)

    def idle(self, slot: int) -> bool:
        """Whether the worker of ``slot`` has loaded the model."""
        return slot not in self.starting.values()

    def replace(self, slot: int, dead: Any) -> None:
        """Start a worker in place of ``dead`` (once, however many of its units were lost)."""
        if self.workers[slot] is dead:
            ray.kill(dead, no_restart=True)
            self.starting = {ref: s for ref, s in self.starting.items() if s != slot}
            self.workers[slot] = self._start(slot)

    def close(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        _POOLS.pop(self.key or "", None)


_POOLS: dict[str, _Pool] = {}


def _pool(model: Any, cluster: Cluster) -> _Pool:
    """The workers for ``model``: those of the previous run when it had the same, else new ones (the
    previous run's are stopped first: they hold the cluster's CPUs and GPUs)."""
    key = repr((json.dumps(model, sort_keys=True), cluster, _session())) if isinstance(model, dict) else ""
    if key in _POOLS:
        return _POOLS[key]
    for old, pool in list(_POOLS.items()):
        if pool.session == _session():
            pool.close()
        else:  # its workers went with their session (ray.shutdown); their handles are no longer valid
            del _POOLS[old]
    if not isinstance(model, dict):
        return _Pool(model, cluster, None)
    _POOLS[key] = _Pool(model, cluster, key)
    return _POOLS[key]


def _session() -> tuple[str, str]:
    """The Ray session this process is connected to: the job id alone repeats from one ``ray.init`` to the
    next (each new cluster numbers its jobs from 1), the driver's node id does not."""
    context = ray.get_runtime_context()
    return context.get_job_id(), context.get_node_id()


def _schedule(work: _Work, pool: _Pool, job: Job, quiet: bool, on_scene: Callable[[Scene], None]) -> None:
    """Keep every worker busy until no task is left; retry the tasks of lost workers."""
    workers, queue, stats = pool.workers, work.queue, work.stats
    lost: dict[tuple[str, int], int] = {}
    in_flight: dict[Any, tuple[int, Any, Scene, int]] = {}  # task -> (worker slot, worker, scene, unit)
    with progress(
        total=work.planned_windows,
        unit="window",
        disable=True if quiet else None,
        file=sys.stderr,
        desc="ray",
    ) as bar:
        while True:
            work.refill(2 * IN_FLIGHT * len(workers))
            bar.total = work.planned_windows
            for slot, worker in enumerate(workers):
                while (
                    pool.idle(slot)
                    and queue
                    and sum(1 for v in in_flight.values() if v[1] is worker) < IN_FLIGHT
                ):
                    scene, band = queue.popleft()
                    if scene.failed:
                        continue
                    task = worker.run.remote(scene, band, job)
                    in_flight[task] = (slot, worker, scene, band)
            if not in_flight and (not pool.starting or not queue):
                break
            (task,), _ = ray.wait([*in_flight, *pool.starting], num_returns=1)
            if task in pool.starting:
                pool.started_up(task)
                continue
            slot, worker, scene, band = in_flight.pop(task)
            try:
                result = ray.get(task)
            except LOST:
                key = (scene.path, band)
                lost[key] = lost.get(key, 0) + 1
                pool.replace(slot, worker)
                if lost[key] < ATTEMPTS:
                    stats.retried += 1
                    queue.appendleft((scene, band))
                else:
                    _fail(
                        scene, f"{scene.path}: a worker was lost {ATTEMPTS} times running it", stats, on_scene
                    )
                bar.set_postfix_str(_postfix(stats), refresh=False)
                continue
            except RayTaskError as error:
                result = {"error": f"{scene.path}: {one_line(error.cause or error)}"}
            if scene.failed:
                continue
            if "error" in result:
                _fail(scene, result["error"], stats, on_scene)
                continue
            if band == FINISH:
                on_scene(scene)
                continue
            scene.done.add(band)
            scene.counts += result["counts"]
            stats.units += 1
            stats.windows += scene.windows[band]
            bar.update(scene.windows[band])
            bar.set_postfix_str(_postfix(stats), refresh=False)
            if scene.whole:
                on_scene(scene)
            elif len(scene.done) == len(scene.bands):
                queue.appendleft((scene, FINISH))


def _fail(scene: Scene, message: str, stats: Stats, on_scene: Callable[[Scene], None]) -> None:
    if scene.failed:
        return
    scene.failed = message
    stats.failed += 1
    on_scene(scene)


def _postfix(stats: Stats) -> str:
    return f"units {stats.units}, retried {stats.retried}, failed {stats.failed}"


def _layout(cluster: Cluster) -> tuple[int, dict[str, Any], str]:
    """Number of workers, the resources of each and their torch device."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if cluster.device.startswith("cuda") and not gpus:
        raise UserError(
            f"--device {cluster.device} asked for but the Ray cluster has no GPU; use --device cpu"
        )
    if gpus and cluster.device != "cpu":
        return cluster.workers or gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda"
    count = cluster.workers or max(1, cpus // cluster.threads)
    return count, {"num_cpus": min(cluster.threads, cpus)}, "cpu"
