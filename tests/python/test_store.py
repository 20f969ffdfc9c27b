"""Teams of a PostgreSQL store through the Python API: a team submitted
with ``omk team run --store --detach`` and run by an ``omk worker``, read
and followed from Python (``OMK_STORE`` names the store).

``make py-test`` runs this under ``tests/pg/with-postgres.sh``, which starts
a throwaway PostgreSQL and sets ``OMK_TEST_PG_URL``; in CI a missing one is
a failure, not a skip.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import AGENT, Env, assert_shape

import omk

OMK_BIN = os.environ.get("OMK_BIN") or str(Path(__file__).resolve().parents[2] / "target/debug/omk")


@pytest.fixture
def store_url() -> str:
    url = os.environ.get("OMK_TEST_PG_URL")
    if not url:
        pytest.skip("OMK_TEST_PG_URL is not set (make py-test starts PostgreSQL)")
    return url


def test_team_events_follow_a_store_team_to_its_end(
    env: Env, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMK_STORE", store_url)
    proc_env = {**os.environ, "OMK_STATE_DIR": str(env.state), "OMK_CONFIG": str(env.config),
                "OMK_KIMI_BIN": AGENT}
    worker = subprocess.Popen(
        [OMK_BIN, "worker", "--name", "pyhost", "--root", str(env.root / "host")],
        env=proc_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        out = subprocess.run(
            [OMK_BIN, "team", "run", "2:executor", "Follow me", "--name", "stored",
             "--subtask", "[sleep:1] one", "--subtask", "two", "--detach", "--json"],
            env=proc_env, cwd=env.project, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        client = env.omk()
        assert client.team_status("stored")["name"] == "stored"
        started = time.monotonic()
        # A 30 s poll_interval: only the store's notifications can deliver
        # the events within the time allowed.
        events = list(client.team_events("stored", follow=True, poll_interval=30))
        assert time.monotonic() - started < 25
        kinds = [e["kind"] for e in events]
        for e in events:
            assert_shape(dict(e), "Event")
            assert e["run_id"] == "stored"
        assert kinds.count("task_completed") == 2, kinds
        assert kinds.count("worker_started") >= 1, kinds
        # The run's end (its proof), then at most its host stopping agents.
        assert "run_completed" in kinds, kinds
        after = kinds[kinds.index("run_completed") + 1:]
        assert set(after) <= {"proof_written", "worker_exited"}, kinds
        assert client.team_status("stored")["phase"] == "Completed"
        # Without follow: the same events, read by sequence (and any the
        # host added since).
        again = [e["id"] for e in client.team_events("stored")]
        assert again[: len(events)] == [e["id"] for e in events]
        # A team in neither place is not found.
        with pytest.raises(omk.NotFoundError, match="here or in the store"):
            client.team_events("nowhere")
    finally:
        worker.terminate()
        worker.wait(timeout=15)


def test_a_pools_capacity_across_the_cluster_is_set_and_read_from_python(
    env: Env, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a store: no cluster, and a capacity has nowhere to go.
    monkeypatch.delenv("OMK_STORE", raising=False)
    client = env.omk()
    assert client.pools_cluster() is None
    with pytest.raises(omk.InvalidInputError, match=r"\[pools.gpu\] max_workers in config"):
        client.pool_capacity_set("gpu", 2)
    # With one (named, or configured by OMK_STORE).
    set_ = client.pool_capacity_set("gpu", 2, store=store_url)
    assert set_["pool"]["name"] == "gpu" and set_["pool"]["capacity"] == 2, set_
    assert_shape(dict(set_["pool"]), "ClusterPool")
    assert "***" in set_["store"] or "@" not in set_["store"], set_["store"]
    monkeypatch.setenv("OMK_STORE", store_url)
    cluster = env.omk().pools_cluster()
    assert cluster is not None
    assert_shape(dict(cluster), "PoolsCluster")
    gpu = next(p for p in cluster["pools"] if p["name"] == "gpu")
    assert_shape(dict(gpu), "ClusterPool")
    assert (gpu["capacity"], gpu["active_tasks"], gpu["leased_slots"]) == (2, 0, 0)
    # The same through the op table (what omk_call and MCP clients use).
    via_call = client.call("pools.cluster", {"store": store_url})
    assert [p["capacity"] for p in via_call["pools"] if p["name"] == "gpu"] == [2]
    assert client.call("pools.set", {"pool": "gpu", "max_workers": 3, "store": store_url})[
        "pool"]["capacity"] == 3
    # None removes the cap; a bad name is refused, nothing written.
    assert env.omk().pool_capacity_set("gpu", None)["pool"]["capacity"] is None
    with pytest.raises(omk.InvalidInputError):
        env.omk().pool_capacity_set("../gpu", 1)
