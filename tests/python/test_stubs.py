"""The hand-written stubs match the extension (mypy's stubtest)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import STUB


def stub_only_names() -> list[str]:
    """TypedDicts and type aliases: they exist only for type checkers."""
    tree = ast.parse(STUB.read_text())
    typed: set[str] = set()
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
            if "TypedDict" in bases or bases & typed:
                typed.add(node.name)
                names.append(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id != "__all__":
                    names.append(target.id)
    return names


def test_stubtest(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    names = stub_only_names()
    assert {"TeamDoc", "TaskEntry", "Metrics", "Phase", "StrPath"} <= set(names)
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text("".join(f"omk._omk.{n}\n" for n in names))
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "omk._omk", "--allowlist", str(allowlist)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
