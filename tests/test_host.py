"""The worker host's side of the preview: the zone its DuckDB sessions follow, read as the C library reads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rosetta_jobs.preview.host import process_timezone


@pytest.mark.parametrize(
    ("tz", "expected"),
    [("Asia/Jakarta", "Asia/Jakarta"), (":Asia/Jakarta", "Asia/Jakarta"), ("", "UTC"),
     (":/usr/share/zoneinfo/Europe/Paris", "Europe/Paris"), (":/nowhere/localtime", "UTC")],
)  # fmt: skip
def test_process_timezone_reads_tz_first(monkeypatch: pytest.MonkeyPatch, tz: str, expected: str) -> None:
    # Given TZ set as the C library reads it
    monkeypatch.setenv("TZ", tz)
    # When the process zone is asked for
    zone = process_timezone()
    # Then it is TZ's zone name
    assert zone == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/usr/share/zoneinfo/Asia/Jakarta", "Asia/Jakarta"), ("../usr/share/zoneinfo/Etc/UTC", "Etc/UTC"),
     ("/usr/share/zoneinfo/posix/Europe/Paris", "Europe/Paris"), (None, "UTC")],
    ids=["absolute", "relative", "posix", "plain-file"],
)  # fmt: skip
def test_process_timezone_without_tz_follows_localtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, target: str | None, expected: str
) -> None:
    # Given no TZ, and an /etc/localtime that links to a zoneinfo file (or is a plain copy of one)
    monkeypatch.delenv("TZ", raising=False)
    localtime = tmp_path / "etc" / "localtime"
    localtime.parent.mkdir()
    if target is None:
        localtime.write_bytes(b"TZif")
    else:
        os.symlink(target, localtime)
    # When the process zone is asked for
    zone = process_timezone(localtime=localtime)
    # Then it is the link's zone name relative to zoneinfo, or UTC when there is no name to read
    assert zone == expected
    assert process_timezone(localtime=tmp_path / "missing") == "UTC"


def test_a_worker_process_builds_its_preview_settings_without_duckdb(tmp_path: Path) -> None:
    # Given a fresh interpreter, as a worker process starts
    code = (
        "import sys\n"
        "import rosetta_jobs.actors, rosetta_jobs.stack, rosetta_jobs.preview.pipeline\n"
        "from rosetta_jobs.preview.host import prepare_temp_directory, process_timezone\n"
        f"prepare_temp_directory({str(tmp_path / 'spill')!r}); process_timezone()\n"
        "print('duckdb' in sys.modules, 'pyarrow' in sys.modules)\n"
    )
    # When it loads the actors and the preview's runner, and reads the host's zone and spill directory
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    # Then neither DuckDB (~40 MB) nor Arrow is loaded: they live in the executors
    assert out.stdout.split() == ["False", "False"], out.stderr
    assert (tmp_path / "spill").is_dir()
