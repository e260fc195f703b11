"""Vendor the dashboard's charting library: ``make vendor`` (or ``python serving/vendor.py``).

Each file comes from a pinned version of an npm package, fetched with ``npm pack`` (the ordinary client, from the
registry npm is configured with), checked against the tarball's SHA-256 recorded here, and written under
``serving/static/vendor/`` (git-ignored), with the package's licence beside it. The service serves the folder's files
at ``/dashboard/static/<name>``; without them the dashboard page says to run this. Changing a version means changing
its checksum: ``npm pack <name>@<version>`` then ``sha256sum`` the tarball, after reading the package's changelog.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "static" / "vendor"


@dataclass(frozen=True)
class Pinned:
    package: str
    version: str
    sha256: str  # of the npm tarball
    member: str  # the file inside the tarball
    name: str  # written as VENDOR / name
    licence: str  # the licence file inside the tarball


PINNED = (
    Pinned(
        "chart.js",
        "4.6.2",
        "24bdaa65a5f90246ef451c0b47b29463fcfa4ff445d2cfcf684ff8f1a1e949c3",
        "package/dist/chart.umd.min.js",
        "chart.umd.min.js",
        "package/LICENSE.md",
    ),
    Pinned(
        "chartjs-chart-matrix",  # the heat map (a Chart.js controller by a Chart.js maintainer)
        "3.1.0",
        "da715f97d20d0d96002ef31c18b583b9f67408f20614aabe491eef0bf27c87f0",
        "package/dist/chartjs-chart-matrix.min.js",
        "chartjs-chart-matrix.min.js",
        "package/LICENSE",
    ),
)


def fetch(pin: Pinned, workdir: Path) -> bytes:
    """The package's tarball, checked against its pinned SHA-256."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("vendor: npm is needed to fetch the charting library (apt-get install npm), then rerun")
    spec = f"{pin.package}@{pin.version}"
    done = subprocess.run(
        [npm, "pack", spec, "--silent", "--pack-destination", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"vendor: `npm pack {spec}` failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    tarball = workdir / done.stdout.strip().splitlines()[-1]
    data = tarball.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != pin.sha256:
        raise SystemExit(f"vendor: {spec} has SHA-256 {digest}, not the pinned {pin.sha256}; refusing to vendor it")
    return data


def member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        found = tar.extractfile(name)
        if found is None:
            raise SystemExit(f"vendor: the tarball has no file {name}")
        return found.read()


def vendor(target: Path = VENDOR) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for pin in PINNED:
            data = fetch(pin, Path(tmp))
            for inner, name in ((pin.member, pin.name), (pin.licence, f"{pin.package}-{pin.version}.LICENSE.txt")):
                path = target / name
                temp = path.with_name(f".{name}.tmp")
                temp.write_bytes(member(data, inner))
                temp.replace(path)
                written.append(path)
    (target / "VERSIONS.txt").write_text("".join(f"{p.package} {p.version} sha256:{p.sha256}\n" for p in PINNED))
    return written


def up_to_date(target: Path = VENDOR) -> bool:
    """Whether the folder holds exactly the pinned versions (``make vendor`` then does nothing)."""
    record = target / "VERSIONS.txt"
    expected = "".join(f"{p.package} {p.version} sha256:{p.sha256}\n" for p in PINNED)
    return record.is_file() and record.read_text() == expected and all((target / p.name).is_file() for p in PINNED)


if __name__ == "__main__":
    if up_to_date() and "--force" not in sys.argv:
        print(f"vendor: {VENDOR} is up to date")
    else:
        for path in vendor():
            print(f"vendor: wrote {path}")
