"""The bookkeeping of a distributed prediction that needs no cluster: the cached workers of a Ray session."""

import pytest


def test_workers_of_an_earlier_ray_session_are_not_reused(monkeypatch):
    """A rerun in the same process after ray.shutdown() and ray.init(): the job id repeats, the handles of
    the first session's workers are no longer valid (ActorHandleNotFoundError), so they are neither reused
    nor killed."""
    runner = pytest.importorskip("aeroseg.distributed.runner")
    session = ["01000000", "node-a"]
    monkeypatch.setattr(runner, "_session", lambda: tuple(session))

    class Pool:
        def __init__(self, model, cluster, key):
            self.key, self.session = key, runner._session()

        def close(self):
            raise AssertionError("killed a worker of an ended session")

    monkeypatch.setattr(runner, "_Pool", Pool)
    monkeypatch.setattr(runner, "_POOLS", {})
    first = runner._pool({"checkpoint": "c"}, runner.Cluster())
    assert runner._pool({"checkpoint": "c"}, runner.Cluster()) is first
    session[1] = "node-b"  # a new cluster numbers its jobs from 1 again
    second = runner._pool({"checkpoint": "c"}, runner.Cluster())
    assert second is not first and list(runner._POOLS.values()) == [second]
