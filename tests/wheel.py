"""Build govstream's wheel and install it into a fresh virtualenv (the light-install
test and the install benchmark): what a user gets from `pip install govstream`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "events", "streams", "projections", "sql", "policies",
           "govstream")  # fmt: skip
INSTALL_SECONDS = 900  # downloads on a fresh machine; the pip cache makes it seconds after


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_SECONDS)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def build_wheel(base: Path) -> Path:
    """The wheel, built from a copy of the sources (building writes build/ beside them)."""
    source = base / "source"
    source.mkdir(parents=True)
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    dist = base / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(source)]
    )
    (wheel,) = dist.glob("govstream-*.whl")
    return wheel


def install(wheel: Path, venv: Path, extras: str = "", *, with_pip: bool = True) -> Path:
    """A fresh virtualenv with the wheel (and `extras`, e.g. "worker"): its bin directory.

    Without pip (`with_pip=False`) the virtualenv is made in a tenth of a second instead
    of the seconds ensurepip takes, and this interpreter's pip installs into it
    (`pip --python`): the same packages, only pip itself is not among them."""
    if with_pip:
        _run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(venv / "bin" / "pip")]
    else:
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    target = f"govstream[{extras}] @ {wheel.as_uri()}" if extras else str(wheel)
    _run([*pip, "install", "--quiet", target])
    return venv / "bin"
