"""The retrain's reload step against a real server (keys on, as deployed): the admin key from a file, the new bundle
served by the next answer, and the service's refusals (wrong role, missing bundle) as ReloadError with their status;
and its serving step asking the same server which bundle it serves (GET /admin/metadata, admin only)."""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis
from bundle_support import write_test_bundle

from recstack.data.prepared import PreparedSplit
from recstack.retrain.reload import ReloadError, ServiceError, admin_key, request_reload, served_bundles
from recstack.serving.api_keys import new_key, write_key_file

pytestmark = [pytest.mark.slow, pytest.mark.redis]
REDIS_URL = "redis://127.0.0.1:6379/0"


def serving_support() -> ModuleType:
    """tests/serving/serving_support.py (the real-server helpers), loaded by path: that folder is on sys.path only
    while its own tests are collected."""
    path = Path(__file__).resolve().parents[1] / "serving" / "serving_support.py"
    spec = importlib.util.spec_from_file_location("retrain_serving_support", path)
    assert spec is not None and spec.loader is not None
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("secrets")
    admin, admin_entry = new_key("admin", "retrain-test")
    recommend, recommend_entry = new_key("recommend", "site-test")
    write_key_file(folder / "api_keys.yaml", [admin_entry, recommend_entry])
    (folder / "admin.key").write_text(admin + "\n")
    (folder / "recommend.key").write_text(recommend + "\n")
    return {"ring": folder / "api_keys.yaml", "admin": folder / "admin.key", "recommend": folder / "recommend.key"}


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    support = serving_support()
    prefix = f"recstack-test:{uuid.uuid4().hex[:10]}:"
    srv = support.start_server(
        tiny_bundle,
        tmp_path_factory.mktemp("server") / "bentoml.log",
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        overrides=["auth=true", f"api_keys_file={keys['ring']}", "redis_timeout_s=1.0", "reload_poll_s=0.2"],
    )
    yield srv
    support.stop_server(srv)
    client = redis.Redis.from_url(REDIS_URL)
    stale = list(client.scan_iter(match=prefix + "*"))
    if stale:
        client.delete(*stale)


def test_the_service_serves_the_reloaded_bundle(
    server, keys: dict[str, Path], serving_split: PreparedSplit, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    new = write_test_bundle(tmp_path / "retrained", serving_split, seed=1)
    key = admin_key(None, keys["admin"])
    done = request_reload(server.base_url, str(new), key)
    assert done.previous and done.bundle != done.previous and done.answer["version"]
    # The answering worker swapped before answering; the other follows within reload_poll_s. Wait until a run of
    # answers all carry the new bundle. Each on a new connection ("connection: close"): a kept-alive connection stays
    # with one worker, so the run could miss a worker still serving the old bundle (and the next test would meet it).
    deadline, streak = time.monotonic() + 60, 0
    headers = {"authorization": f"Bearer {key}", "connection": "close"}
    with server.client() as http:
        while streak < 20 and time.monotonic() < deadline:
            answer = http.post("/recommend", json={"user_id": "u1", "k": 5}, headers=headers)
            assert answer.status_code == 200, answer.text
            streak = streak + 1 if answer.json()["model"] == done.bundle else 0
    assert streak >= 20, "a worker still serves the old bundle"


def test_the_service_refusals_are_reload_errors(server, keys: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ReloadError) as wrong_role:
        request_reload(server.base_url, str(tmp_path), admin_key(None, keys["recommend"]))
    assert wrong_role.value.status == 403
    with pytest.raises(ReloadError) as missing:
        request_reload(server.base_url, str(tmp_path / "nowhere"), admin_key(None, keys["admin"]))
    assert missing.value.status == 404 and "(field bundle)" in str(missing.value)


def test_the_service_says_which_bundle_it_serves_and_the_retrain_judges_that_one(server, keys: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    from omegaconf import OmegaConf

    from recstack.bundle.reader import Bundle
    from recstack.retrain.cycle import find_serving, load_serving

    key = admin_key(None, keys["admin"])
    (served,) = served_bundles(server.base_url, key)  # no experiment: one arm
    assert served.arm is None and served.ref == served.bundle and Path(served.bundle).is_absolute()
    assert Bundle.load(served.bundle).manifest.digest() == served.digest and served.tag.endswith(served.digest[:12])
    cfg = OmegaConf.create(
        {
            "service_url": server.base_url,
            "serving_bundle": "recstack:not-used",
            "reload": {"arm": None, "timeout_s": 10},
        }
    )
    found = find_serving(cfg, None, key)  # type: ignore[arg-type]  # the registry is not asked
    assert (found.ref, found.source, found.digest) == (served.bundle, "service", served.digest)
    assert load_serving(found) is not None
    with pytest.raises(ServiceError) as wrong_role:
        served_bundles(server.base_url, admin_key(None, keys["recommend"]))
    assert wrong_role.value.status == 403
    with server.client() as http:
        assert http.get("/admin/metadata").status_code == 401
        post = http.post("/admin/metadata", json={}, headers={"authorization": f"Bearer {key}"})
        assert post.status_code == 405 and post.json()["field"] == "method"


def test_an_unreachable_service_is_a_reload_error(tmp_path: Path) -> None:
    support = serving_support()
    with pytest.raises(ReloadError, match="could not be reached") as error:
        request_reload(f"http://127.0.0.1:{support.free_port()}", str(tmp_path), "key", timeout_s=5)
    assert error.value.status is None


def test_the_admin_key_comes_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k").write_text("from-file\nignored\n")
    monkeypatch.setenv("RETRAIN_TEST_KEY", " from-env ")
    assert admin_key("RETRAIN_TEST_KEY", tmp_path / "k") == "from-env"
    monkeypatch.setenv("RETRAIN_TEST_KEY", "")
    assert admin_key("RETRAIN_TEST_KEY", tmp_path / "k") == "from-file"
    with pytest.raises(ValueError, match="no admin API key"):
        admin_key("RETRAIN_TEST_KEY", None)
    with pytest.raises(ValueError, match="cannot be read"):
        admin_key(None, tmp_path / "missing")
