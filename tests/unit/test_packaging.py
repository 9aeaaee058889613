"""The installed wheel carries the schemas the package validates with, and finds them there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import ROOT


def test_wheel_carries_the_schemas_and_the_package_uses_them(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"dse/schemas/config.schema.json", "dse/schemas/workflow.schema.json"} <= set(names)
    assert "dse/cli/__init__.py" in names and not any(n.startswith("tests/") for n in names)
    assert "dse/report/report.html.j2" in names, "the HTML report's template is package data"
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    found = subprocess.run(
        [sys.executable, "-c", "from dse.config.schema import schema_dir; print(schema_dir())"],
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(found.stdout.strip()) == unpacked / "dse" / "schemas"
