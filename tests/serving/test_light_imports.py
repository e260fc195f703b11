"""Serving stays light: the service module and the whole request path import neither torch nor Lightning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from serving_support import REPO

PROBE = """
import json, sys
import serving.service
from recstack.bundle.reader import Bundle
from recstack.serving.pipeline import Pipeline, Query
pipeline = Pipeline.from_bundle(Bundle.load(sys.argv[1]))
pipeline.recommend(Query(user_id="u1", k=3))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning", "pytorch_lightning"))))
"""


def test_service_and_pipeline_import_no_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    from recstack.serving.api_keys import new_key, write_key_file

    keys = tmp_path / "api_keys.yaml"
    write_key_file(keys, [new_key("admin", "probe")[1]])
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RECSTACK_BUNDLE": str(tiny_bundle),
        "RECSTACK_HMAC_KEY": "k" * 32,
        "RECSTACK_API_KEYS_FILE": str(keys),
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_bundle)], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
