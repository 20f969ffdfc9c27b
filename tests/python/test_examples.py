"""The docs' example (tests/python/example.py) and the type-checked usage
script run for real against the scripted agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import HERE, Env


def run(env: Env, script: Path) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, OMK_STATE_DIR=str(env.state), OMK_CONFIG=str(env.config))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=env.project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docs_example(env: Env) -> None:
    out = run(env, HERE / "example.py")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "doctor: healthy"
    assert lines[1].startswith("executor-") and " Completed tokens: " in lines[1]
    assert "t1 completed" in lines[2] and "t2 completed" in lines[3]
    assert (env.project / "README.md").read_text() == "# Hello"
    assert (env.project / "LICENSE").read_text() == "MIT"


def test_docs_embed_the_example() -> None:
    docs = (HERE.parents[1] / "docs" / "python.md").read_text()
    example = (HERE / "example.py").read_text()
    assert example.strip() in docs, "docs/python.md must show tests/python/example.py verbatim"
    readme = (HERE.parents[1] / "README.md").read_text()
    assert example.strip() in readme, "README.md must show tests/python/example.py verbatim"
    assert len(example.strip().splitlines()) == 10


def test_typecheck_example_runs(env: Env) -> None:
    out = run(env, HERE / "typecheck_example.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "2 True 1"
