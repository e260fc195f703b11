"""A manifest names the bundle's files by plain file names: one that is absolute, has a folder part or is '..' would
make the reader open files outside the bundle folder, so it is refused before anything is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recstack.bundle.layout import MANIFEST, BundleError
from recstack.bundle.manifest import DIGEST_KEY, BundleManifest, content_digest
from recstack.bundle.reader import Bundle


def resigned(raw: dict) -> str:
    """The manifest with a correct digest, so that only the file name can be what is refused."""
    body = {k: v for k, v in raw.items() if k != DIGEST_KEY}
    return json.dumps({**body, DIGEST_KEY: content_digest(body)})


@pytest.mark.parametrize(
    "name", ["../users.parquet", "/etc/passwd", "sub/items.parquet", "..", ".", "", "a\\b.npy", "C:evil.npy"]
)
def test_a_file_name_outside_the_bundle_is_refused(tiny_bundle: Path, name: str) -> None:
    raw = json.loads((tiny_bundle / MANIFEST).read_text())
    raw["files"][name] = "0" * 64
    with pytest.raises(BundleError, match="not a plain file name inside the bundle folder"):
        BundleManifest.from_json(resigned(raw))
    with pytest.raises(BundleError, match="not a plain file name"):
        BundleManifest.from_json(resigned(raw), verify=False)


def test_a_ranker_file_outside_the_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    raw = json.loads((copy / MANIFEST).read_text())
    assert raw["ranker"] is not None
    raw["ranker"]["file"] = "../ranker.onnx"
    (copy / MANIFEST).write_text(resigned(raw))
    with pytest.raises(BundleError, match=r"'\.\./ranker\.onnx' is not a plain file name"):
        Bundle.load(copy)


def test_the_exported_names_are_accepted(tiny_bundle: Path) -> None:
    manifest = BundleManifest.from_json((tiny_bundle / MANIFEST).read_text())
    assert manifest.files and all("/" not in name for name in manifest.files)
