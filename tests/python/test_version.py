"""The wheel imports and reports the same version as the CLI."""

import subprocess
import os

import omk


def test_version_matches_cli():
    omk_bin = os.environ.get("OMK_BIN")
    assert omk.__version__ == omk.version()
    if omk_bin:
        out = subprocess.run([omk_bin, "--version"], check=True, capture_output=True, text=True)
        assert out.stdout.strip() == f"omk {omk.__version__}"


def test_package_is_typed():
    here = os.path.dirname(omk.__file__)
    assert os.path.exists(os.path.join(here, "py.typed"))
    assert os.path.exists(os.path.join(here, "_omk.pyi"))
