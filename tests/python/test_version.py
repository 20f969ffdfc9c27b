"""The wheel imports, reports the same version as the CLI, and is typed."""

import os
import subprocess
from pathlib import Path

import omk


def test_version_matches_cli(tmp_path: Path) -> None:
    assert omk.__version__ == omk.version()
    assert omk.Omk(state_dir=tmp_path).call("version") == {"version": omk.__version__}
    omk_bin = os.environ.get("OMK_BIN")
    if omk_bin:
        out = subprocess.run([omk_bin, "--version"], check=True, capture_output=True, text=True)
        assert out.stdout.strip() == f"omk {omk.__version__}"


def test_package_is_typed() -> None:
    here = os.path.dirname(omk.__file__)
    assert os.path.exists(os.path.join(here, "py.typed"))
    assert os.path.exists(os.path.join(here, "_omk.pyi"))


def test_public_names_and_docstrings() -> None:
    for name in omk.__all__:
        assert hasattr(omk, name), name
    assert omk.Omk.__doc__ and "state_dir" in omk.Omk.__doc__
    methods = [
        "team_run", "team_status", "team_list", "team_shutdown", "team_events",
        "gates_list", "gates_run", "gates_status", "gates_reset",
        "pools_status", "pools_cleanup", "metrics", "health", "doctor", "call", "agents_list",
    ]
    for m in methods:
        doc = getattr(omk.Omk, m).__doc__
        assert doc and len(doc) > 20, f"Omk.{m} has no docstring"
    sig = getattr(omk.Omk.team_run, "__text_signature__", None)
    assert sig is not None and "*, name=None" in sig and "detach=False" in sig
