"""Every error code raises its own OmkError subclass, carrying ``.code``."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from conftest import Env

import omk

CLASSES = {
    "invalid_input": omk.InvalidInputError,
    "not_found": omk.NotFoundError,
    "conflict": omk.ConflictError,
    "corrupt_state": omk.CorruptStateError,
    "agent": omk.AgentError,
    "timeout": omk.OmkTimeoutError,
    "cancelled": omk.CancelledError,
    "io": omk.OmkIOError,
}


def test_hierarchy_and_codes() -> None:
    assert issubclass(omk.OmkError, Exception)
    assert omk.OmkError.code == "error"
    for code, cls in CLASSES.items():
        assert issubclass(cls, omk.OmkError)
        assert cls.code == code
        assert cls.__module__ == "omk"
        assert cls.__doc__ and code in cls.__doc__
        # Users can raise and catch them too; the code comes with the class.
        err = cls("message")
        assert err.code == code and str(err) == "message"
    assert omk.CancelledError.team is None
    # They pickle (module "omk" re-exports them).
    again = pickle.loads(pickle.dumps(omk.NotFoundError("gone")))
    assert type(again) is omk.NotFoundError and str(again) == "gone"


def test_invalid_spec(client: omk.Omk, env: Env) -> None:
    with pytest.raises(omk.InvalidInputError) as info:
        client.team_run("0:executor", "task")
    assert info.value.code == "invalid_input"
    assert "0:executor" in str(info.value)
    with pytest.raises(omk.InvalidInputError):
        client.team_run("2:executor", "task", name="../escape")
    with pytest.raises(omk.InvalidInputError):
        client.team_run("1:executor", "   ")
    assert not (env.state / "team").exists() or not any((env.state / "team").iterdir())


def test_unknown_team(client: omk.Omk) -> None:
    for call in (
        lambda: client.team_status("ghost"),
        lambda: client.team_shutdown("ghost"),
        lambda: client.team_events("ghost"),
        lambda: client.call("team.status", {"name": "ghost"}),
    ):
        with pytest.raises(omk.NotFoundError) as info:
            call()
        assert info.value.code == "not_found"
        assert "ghost" in str(info.value)


def test_duplicate_team_name(client: omk.Omk) -> None:
    client.team_run("1:executor", "first", name="twice", subtasks=["x"])
    with pytest.raises(omk.ConflictError) as info:
        client.team_run("1:executor", "second", name="twice", subtasks=["x"])
    assert info.value.code == "conflict"
    assert "twice" in str(info.value)


def test_corrupt_team_document(client: omk.Omk, env: Env) -> None:
    client.team_run("1:executor", "T", name="broken", subtasks=["x"])
    (env.team_dir("broken") / "team.json").write_text("{")
    with pytest.raises(omk.CorruptStateError) as info:
        client.team_status("broken")
    assert info.value.code == "corrupt_state"
    assert "team.json" in str(info.value)
    # The list reports it instead of failing or hiding it.
    listed = client.team_list()
    assert listed["teams"] == []
    assert listed["errors"][0]["name"] == "broken"
    assert listed["errors"][0]["error"]["code"] == "corrupt_state"


def test_missing_agent(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMK_KIMI_BIN", str(env.root / "no-such-agent"))
    with pytest.raises(omk.AgentError) as info:
        env.omk().team_run("1:executor", "T", subtasks=["x"])
    assert info.value.code == "agent"
    assert "OMK_KIMI_BIN" in str(info.value)


def test_io_error(env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    o = omk.Omk(state_dir=blocker / "state", project_dir=env.project, config=env.config)
    with pytest.raises(omk.OmkIOError) as info:
        o.team_run("1:executor", "T", subtasks=["x"])
    assert info.value.code == "io"
    assert "Not a directory" in str(info.value)


def test_bad_arguments(client: omk.Omk) -> None:
    with pytest.raises(omk.InvalidInputError):
        client.team_events("x", poll_interval=0)
    with pytest.raises(TypeError):
        client.team_run("1:executor", "T", subtasks="not a list")
    with pytest.raises(TypeError):
        client.team_run("1:executor", "T", "positional-name")  # type: ignore[misc]
    with pytest.raises(omk.InvalidInputError, match="unknown field"):
        client.call("team.run", {"spec": "1:executor", "tsk": "T"})
