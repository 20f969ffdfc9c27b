"""schemathesis (PyPI) against the dashboard's own /api/openapi.json: every
operation, generated inputs in and out of the schema, no failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
OMK = os.path.abspath(os.environ.get("OMK_BIN") or REPO / "target" / "debug" / "omk")
AGENT = str(REPO / "target" / "debug" / "omk-scripted-agent")
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".omk").mkdir(parents=True)
    (project / ".omk" / "gates.toml").write_text('[[gate]]\nname = "ok"\ncommand = "true"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMK_")}
    env.update(OMK_STATE_DIR=str(tmp_path / "state"), OMK_KIMI_BIN=AGENT,
               XDG_CONFIG_HOME=str(tmp_path / "xdg"), NO_COLOR="1")
    # Some state, so the routes answer documents, not only 404s.
    for args in (["team", "run", "1:executor", "Build", "--name", "alpha", "--subtask", "one"],
                 ["goal", "run", "Greet [json-plan:Hi]"]):
        r = subprocess.run([OMK, *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    dash = subprocess.Popen([OMK, "dashboard", "--bind", "127.0.0.1:0"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert dash.stdout is not None
        url = dash.stdout.readline().strip().rsplit(" ", 1)[-1]
        r = subprocess.run(
            [SCHEMATHESIS, "run", f"{url}/api/openapi.json", "--url", url, "--max-examples", "50",
             "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**env, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"},
        )
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
        assert "passed" in r.stdout
    finally:
        dash.kill()
        dash.wait()
