"""`make bench` (install part): what `pip install govstream` costs a runtime author.

Not a test: prints figures and writes them to BENCHMARKS.md (between the
install markers) with the machine and the date. The wheel is built from this
checkout and installed twice into fresh virtualenvs: without extras (the
producer SDK) and with the worker extra (the pipeline). For each: the size on
disk of the virtualenv and of its site-packages, the packages installed, and
the import time of what a runtime imports (the session builder, the emitter,
the admission client) in a new interpreter, the median of several runs.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.report import write_section
from bench.run import load_average, machine, say
from tests.wheel import build_wheel, install

BEGIN, FINISH = "<!-- install -->", "<!-- /install -->"
RUNS = 7
SDK_IMPORT = "import govstream.session, events.emitter, events.admission_client"
WORKER_IMPORT = "import govstream.worker, streams.governor, sql.client, chdb"


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _import_seconds(python: Path, statement: str) -> float:
    """Median wall time of a new interpreter that runs `statement` (interpreter start
    included: what a runtime's process pays), over RUNS runs after one warm-up."""
    times = []
    for run in range(RUNS + 1):
        started = time.perf_counter()
        subprocess.run([str(python), "-c", statement], check=True, capture_output=True)
        if run:  # the first run compiles the .pyc files
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _packages(pip: Path) -> int:
    out = subprocess.run([str(pip), "list", "--format=freeze"], check=True, capture_output=True)
    return len(out.stdout.decode().split())


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="govstream-install-") as tmp:
        base = Path(tmp)
        say("building the wheel ...")
        wheel = build_wheel(base)
        empty = base / "empty"  # a virtualenv with nothing installed: pip itself
        subprocess.run([sys.executable, "-m", "venv", str(empty)], check=True)  # as install()
        baseline = _bytes(empty)
        for label, extras in (
            ("light (`pip install govstream`)", ""),
            ("worker (`pip install 'govstream[worker]'`)", "worker"),
        ):
            say(f"installing {label} ...")
            started = time.perf_counter()
            bin_dir = install(wheel, base / (extras or "light"), extras)
            seconds = time.perf_counter() - started
            site = next((bin_dir.parent / "lib").glob("python3*/site-packages"))
            size = _bytes(bin_dir.parent)
            sdk = _import_seconds(bin_dir / "python", SDK_IMPORT)
            worker = _import_seconds(bin_dir / "python", WORKER_IMPORT) if extras else None
            rows.append((label, size, _bytes(site), _packages(bin_dir / "pip"), sdk,
                         worker, seconds))  # fmt: skip
            say(f"  {size / 1e6:,.0f} MB, SDK import {sdk * 1000:,.0f} ms")
        bare = _import_seconds(empty / "bin" / "python", "pass")
    lines = [
        BEGIN,
        "## Install size and import time (issue 13)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; load average "
        f"{load_average()}. `python -m bench.install`: the wheel built from this checkout, "
        "installed into fresh virtualenvs (Python 3.11; an empty virtualenv is "
        f"{baseline / 1e6:,.0f} MB, pip and setuptools).",
        "",
        "| install | virtualenv | site-packages | packages | SDK import | worker import | install time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, size, site_size, packages, sdk, worker, seconds in rows:
        worker_text = f"{worker * 1000:,.0f} ms" if worker is not None else "n/a (not installed)"
        lines.append(
            f"| {label} | {size / 1e6:,.0f} MB | {site_size / 1e6:,.0f} MB | {packages} | "
            f"{sdk * 1000:,.0f} ms | {worker_text} | {seconds:,.0f} s |"
        )
    lines += [
        "",
        f"SDK import: a new interpreter running `{SDK_IMPORT}`, median of {RUNS} runs; an "
        f"interpreter that imports nothing takes {bare * 1000:,.0f} ms. Worker import: "
        f"`{WORKER_IMPORT}` (Faust, the governor, the ClickHouse client and chDB). Install time is with a warm pip "
        "cache (no downloads), so it measures unpacking, not the network.",
        FINISH,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    write_section(text, BEGIN, FINISH)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
