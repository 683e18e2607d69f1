"""Packaging invariants: one import root, every subpackage listed for the wheel."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"recon": "recon", "recon.attention": "attention", "recon.align": "align",
          "recon.viewer": "viewer", "recon.datasets": "datasets"}  # fmt: skip


def test_every_subpackage_is_listed_for_the_wheel():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == MAPPED
    found = set()
    for package, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *rel)))
    assert found == set(tool["packages"]), "add new subpackages to [tool.setuptools] packages"


def test_mapped_packages_import_under_recon_only():
    code = (
        "import importlib.util as u, recon, recon.attention, recon.align, recon.viewer, recon.datasets;"
        "print(all(u.find_spec(n) is None for n in ('attention', 'align', 'viewer')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
