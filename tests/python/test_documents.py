"""metrics, health, doctor, pools and call(): the CLI's JSON documents, as
dicts whose keys match the TypedDicts of _omk.pyi and keep document order."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest
from conftest import Env, assert_shape

import omk


def test_metrics_shape_and_types(client: omk.Omk) -> None:
    m = client.metrics()
    assert_shape(dict(m), "Metrics")
    for key, value in m.items():
        if key.startswith("total_"):
            assert isinstance(value, int) and value == 0, (key, value)
    assert m["version"] == 1
    assert isinstance(m["created_at"], str)
    assert client.call("metrics") == m
    assert client.call("metrics", {}) == m


def test_health_shape(client: omk.Omk) -> None:
    h = client.health()
    assert_shape(dict(h), "Health")
    assert h["status"] == "ok"
    assert h["version"] == omk.__version__
    assert set(h["checks"]) == {"config", "kimi", "state_dir", "disk"}
    for check in h["checks"].values():
        assert_shape(dict(check), "HealthCheck")
        assert check["status"] in ("ok", "warn", "error")


def test_doctor_shape(client: omk.Omk, env: Env) -> None:
    d = client.doctor()
    assert_shape(dict(d), "Doctor")
    assert (d["status"], d["healthy"]) == ("healthy", True)
    assert [c["name"] for c in d["checks"]] == ["config", "kimi", "state_dir", "disk"]
    for check in d["checks"]:
        assert_shape(dict(check), "DoctorCheck")
    kimi = d["checks"][1]
    assert kimi["path"] == os.environ["OMK_KIMI_BIN"]
    assert "omk-scripted-agent" in kimi["detail"]
    assert d["checks"][0]["files"] == [str(env.config)]


def test_documents_equal_the_cli_json(client: omk.Omk, env: Env) -> None:
    omk_bin = os.environ.get("OMK_BIN")
    if not omk_bin:
        pytest.skip("OMK_BIN is not set (tests/python/run.sh sets it)")
    base = [omk_bin, "--state-dir", str(env.state), "-C", str(env.project), "--config", str(env.config)]

    def cli(*args: str) -> object:
        out = subprocess.run([*base, *args, "--json"], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    # Same content and same key order as the CLI's --json output.
    for ours, theirs in [
        (client.pools_status(), cli("pools", "status")),
        (client.gates_list(), cli("gates", "list")),
        (client.team_list(), cli("team", "list")),
    ]:
        assert ours == theirs
        assert json.dumps(ours) == json.dumps(theirs)
    ours_doc, theirs_doc = client.doctor(), cli("doctor")
    assert isinstance(theirs_doc, dict)
    assert list(ours_doc) == list(theirs_doc)


def test_doctor_reports_a_broken_config_instead_of_raising(env: Env) -> None:
    env.config.write_text("[team\n")
    o = env.omk()
    d = o.doctor()
    assert d["healthy"] is False and d["status"] == "unhealthy"
    assert d["checks"][0]["status"] == "error"
    with pytest.raises(omk.InvalidInputError):
        o.pools_status()


def test_pools_status_and_cleanup(client: omk.Omk) -> None:
    status = client.pools_status()
    assert_shape(dict(status), "PoolsStatus")
    (default,) = status["pools"]
    assert_shape(dict(default), "PoolStatus")
    assert default["name"] == "default" and default["max_workers"] == 8
    assert default["active_tasks"] == 0 and default["stale_entries"] == 0
    cleaned = client.pools_cleanup()
    assert_shape(dict(cleaned), "PoolsCleanup")
    assert cleaned["removed"] == 0


def test_call_converts_values_both_ways(client: omk.Omk) -> None:
    assert client.call("gates.status", {"all_projects": True}) == {"breakers": []}
    with pytest.raises(omk.InvalidInputError, match="expected a boolean"):
        client.call("gates.status", {"all_projects": "yes"})
    with pytest.raises(omk.InvalidInputError, match="dict keys must be str"):
        client.call("metrics", {1: 2})  # type: ignore[dict-item]
    with pytest.raises(omk.InvalidInputError, match=r'params\["a"\]\[1\]'):
        client.call("metrics", {"a": [1, object()]})
    with pytest.raises(omk.InvalidInputError, match="not a JSON number"):
        client.call("metrics", {"a": float("nan")})
    with pytest.raises(omk.InvalidInputError, match="64 bits"):
        client.call("metrics", {"a": 2**70})
    with pytest.raises(omk.InvalidInputError, match="takes no parameters"):
        client.call("metrics", {"a": (1, 2.5, None, True, "s", {"k": []})})
    with pytest.raises(omk.NotFoundError, match="unknown operation"):
        client.call("no.such.op")


def test_handle_is_shared_by_threads(client: omk.Omk) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                assert client.metrics()["total_team_runs"] == 0
                client.pools_status()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_paths_and_repr(client: omk.Omk, env: Env) -> None:
    assert client.state_dir == env.state
    assert client.project_dir == env.project
    assert repr(client) == f'Omk(state_dir="{env.state}", project_dir="{env.project}")'
