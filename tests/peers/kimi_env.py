"""Isolated environment and arguments for running the real kimi-cli offline.

Standard library only. Follows docs/WIRE.md ("Running the real kimi-cli offline",
4.2 and 4.3): private HOME and KIMI_SHARE_DIR, telemetry off in the environment
and in the config, no proxies for loopback, and a config file whose only
provider is the fake LLM on 127.0.0.1.

    env, cfg = kimi_env(tmpdir, llm_port)
    argv = [kimi_bin(), *kimi_args(cfg, workdir)]           # talk Wire yourself
    env = omk_env(tmpdir, llm_port)                         # or let omk start kimi
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
KIMI_VERSION = "1.51.0"

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "FTP_PROXY", "WS_PROXY", "WSS_PROXY")
# Variables that would point kimi at another provider or model than the config's.
_OVERRIDE_VARS = (
    "KIMI_BASE_URL",
    "KIMI_API_KEY",
    "KIMI_MODEL_NAME",
    "KIMI_MODEL_MAX_CONTEXT_SIZE",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "KIMI_SCRIPTED_ECHO_SCRIPTS",
)


def kimi_venv() -> Path:
    """The venv tests/peers/setup-kimi.sh installs into (``$KIMI_VENV`` or <repo>/.kimi-venv)."""
    return Path(os.environ.get("KIMI_VENV") or REPO / ".kimi-venv")


def kimi_bin() -> Path:
    return kimi_venv() / "bin" / "kimi"


def unavailable_reason() -> str | None:
    """Why the real kimi cannot run here (setup-kimi.sh's marker), or None if it can."""
    marker = kimi_venv() / ".unavailable"
    if marker.exists():
        return marker.read_text().strip() or "kimi-cli is unavailable"
    if not os.access(kimi_bin(), os.X_OK):
        return f"{kimi_bin()} not found: run tests/peers/setup-kimi.sh"
    return None


def kimi_required() -> bool:
    """Whether a missing real kimi is a failure rather than a skip: in CI
    (``CI=true``, which CI services set) or with ``OMK_REQUIRE_KIMI=1`` /
    ``OMK_REQUIRE_PEERS=1``. Locally, with none of them, the tests skip."""
    return (
        os.environ.get("CI") == "true"
        or os.environ.get("OMK_REQUIRE_KIMI") == "1"
        or os.environ.get("OMK_REQUIRE_PEERS") == "1"
    )


def skip_unless_kimi() -> None:
    """Call at module level: skip the module when the real kimi cannot run
    here, or fail it (a collection error, so the run fails) when
    :func:`kimi_required` -- the ``.unavailable`` marker counts as missing too."""
    why = unavailable_reason()
    if why is None:
        return
    import pytest

    if kimi_required():
        pytest.fail(
            f"real kimi-cli required (CI=true, OMK_REQUIRE_KIMI=1 or OMK_REQUIRE_PEERS=1) but: {why}",
            pytrace=False,
        )
    pytest.skip("SKIPPED: " + why, allow_module_level=True)


def config_toml(llm_port: int, max_retries_per_step: int = 2) -> str:
    return f"""\
default_model = "fake"
telemetry = false

[models.fake]
provider = "fake"
model = "fake-model"
max_context_size = 131072

[providers.fake]
type = "kimi"
base_url = "http://127.0.0.1:{int(llm_port)}/v1"
api_key = "sk-fake"

[loop_control]
max_retries_per_step = {int(max_retries_per_step)}
"""


def kimi_env(tmpdir, llm_port: int, base_env: dict | None = None) -> tuple[dict, Path]:
    """Build the isolated env for kimi and write its config file under ``tmpdir``.

    Returns ``(env, config_file)``. ``base_env`` defaults to ``os.environ``.
    """
    tmp = Path(tmpdir)
    home = tmp / "home"
    share = home / ".kimi"
    share.mkdir(parents=True, exist_ok=True)
    config_file = tmp / "kimi-config.toml"
    config_file.write_text(config_toml(llm_port))

    env = dict(os.environ if base_env is None else base_env)
    for name in _PROXY_VARS:
        env.pop(name, None)
        env.pop(name.lower(), None)
    for name in _OVERRIDE_VARS:
        env.pop(name, None)
    env.update(
        {
            "HOME": str(home),
            "KIMI_SHARE_DIR": str(share),
            "KIMI_DISABLE_TELEMETRY": "1",
            "KIMI_CLI_NO_AUTO_UPDATE": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env, config_file


def kimi_args(config_file, workdir) -> list[str]:
    """Arguments for a Wire session: ``--wire --work-dir DIR --config-file F``."""
    return ["--wire", "--work-dir", str(workdir), "--config-file", str(config_file)]


def omk_env(tmpdir, llm_port: int, base_env: dict | None = None) -> dict:
    """Env for running omk against the real kimi: kimi_env plus OMK_KIMI_BIN/OMK_KIMI_ARGS.

    omk adds ``--wire --work-dir DIR`` itself. The config path is written under
    ``tmpdir``; it is shell-quoted only if needed, so keep ``tmpdir`` free of
    spaces and OMK_KIMI_ARGS splits on whitespace.
    """
    env, config_file = kimi_env(tmpdir, llm_port, base_env)
    env["OMK_KIMI_BIN"] = str(kimi_bin())
    env["OMK_KIMI_ARGS"] = f"--config-file {shlex.quote(str(config_file))}"
    return env


def readline_with_timeout(stream, timeout: float) -> str:
    box: list[str] = []
    t = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return box[0].strip() if box else ""


class FakeLLM:
    """A fake LLM server on 127.0.0.1: fake_llm.py (OpenAI chat completions)
    by default, or ``script="fake_anthropic.py"`` (Anthropic Messages)."""

    def __init__(self, log_path: Path, script: str = "fake_llm.py"):
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script), "--port", "0", "--log", str(log_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = readline_with_timeout(self.proc.stdout, 10.0)
        assert line.startswith("PORT "), f"fake_llm said {line!r}"
        self.port = int(line.split()[1])

    def records(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(l) for l in self.log_path.read_text().splitlines() if l.strip()]

    def completions(self) -> list[dict]:
        return [r for r in self.records() if r.get("path", "").endswith("/chat/completions")]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


def prepare_kimi_acp(env: dict, tmpdir) -> None:
    """Make `kimi acp` runnable offline with the env of :func:`omk_env`:
    it takes no --config-file (the share dir's config.toml) and wants a login
    file before `session/new` (a dummy one is enough offline, docs/ACP.md)."""
    share = Path(env["KIMI_SHARE_DIR"])
    (share / "config.toml").write_text((Path(tmpdir) / "kimi-config.toml").read_text())
    (share / "credentials").mkdir(parents=True, exist_ok=True)
    (share / "credentials" / "kimi-code.json").write_text(
        json.dumps({"access_token": "offline", "refresh_token": "offline",
                    "expires_at": 4102444800, "scope": "", "token_type": "Bearer"})
    )


def team_events(state_dir, team: str) -> list[dict]:
    """The events of team ``team`` under an omk state dir."""
    path = Path(state_dir) / "team" / team / "events.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def proc_alive(pid: int) -> bool:
    """True while ``pid`` runs (zombies count as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")
