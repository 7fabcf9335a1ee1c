"""Headless Chromium for dashboard screenshots, resolved like the Kafka jars.

A `chromium` (or `chromium-browser`, `google-chrome`) on PATH is used as it is.
Otherwise the Debian packages are fetched with `apt-get download` (no root
needed: nothing is installed system-wide), unpacked with `dpkg-deb -x` into
the cache (~/.cache/govstream/chromium/<version>), and run with the unpacked
libraries on LD_LIBRARY_PATH. The package list is Chromium plus the shared
libraries a minimal Debian 12 image lacks (found with ldd).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from govstream.errors import GovstreamError

PACKAGES = (
    "chromium", "chromium-common", "libopenh264-7", "libdouble-conversion3",
    "libharfbuzz-subset0", "libpulse0", "libflac12", "libopus0", "libxnvctrl0",
    "libminizip1", "libopenjp2-7", "libogg0", "libsndfile1", "libasyncns0", "libvorbis0a",
    "libvorbisenc2", "libmpg123-0", "libmp3lame0",
)  # fmt: skip
CACHE_VERSION = "deb12-1"  # bump when PACKAGES changes


@dataclass(frozen=True)
class Chromium:
    binary: Path
    env: dict[str, str]

    def screenshot(
        self, page: Path, out: Path, width: int = 1400, height: int = 3000, timeout: float = 90
    ) -> Path:
        """A PNG of `page` (a local HTML file) as a browser draws it."""
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix="govstream-chromium-") as profile:
            result = subprocess.run(
                [str(self.binary), "--headless=new", "--no-sandbox", "--disable-gpu",
                 "--hide-scrollbars", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", f"--screenshot={out}",
                 page.resolve().as_uri()],
                env=self.env, capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
        if not out.exists():
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise GovstreamError(f"chromium wrote no screenshot (exit {result.returncode}): {tail}")
        return out


def _on_path() -> Path | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def ensure_chromium(cache_dir: Path) -> Chromium:
    """A runnable headless Chromium: the system's, or the cached Debian packages."""
    system = _on_path()
    if system is not None:
        return Chromium(system, dict(os.environ))
    root = cache_dir / "chromium" / CACHE_VERSION
    binary = root / "usr" / "lib" / "chromium" / "chromium"
    if not binary.exists():
        _fetch(root)
    libs = [root / "usr/lib/x86_64-linux-gnu", root / "usr/lib/x86_64-linux-gnu/pulseaudio",
            root / "usr/lib/chromium"]  # fmt: skip
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([*map(str, libs), env.get("LD_LIBRARY_PATH", "")])
    return Chromium(binary, env)


def _fetch(root: Path) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise GovstreamError(
                f"no chromium on PATH and no {tool} to fetch it: install chromium "
                "(apt-get install chromium) or put it on PATH"
            )
    with tempfile.TemporaryDirectory(prefix="govstream-chromium-debs-") as work:
        fetched = subprocess.run(
            ["apt-get", "download", *PACKAGES], cwd=work, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        if fetched.returncode != 0:
            tail = " | ".join(fetched.stderr.strip().splitlines()[-2:])
            raise GovstreamError(f"apt-get download of chromium failed: {tail}")
        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for deb in sorted(Path(work).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)  # complete or absent: never a half-unpacked cache
