"""Which bundle the retrain judges its candidate against: the service's own answer (GET /admin/metadata) when a
service is configured, else serving_bundle, else the registry's last deployment; and the failures that must stop a
run before it trains (a bundle the service serves that this machine cannot read, a refused key, an unknown arm).
The service is faked here; tests/retrain/test_reload_server.py asks a real one."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from recstack.bundle.layout import MANIFEST
from recstack.bundle.reader import Bundle
from recstack.retrain import reload
from recstack.retrain.cycle import ServingRef, find_serving, load_serving
from recstack.retrain.outcome import ExitCode, RetrainError
from recstack.retrain.registry import Deployed
from recstack.retrain.reload import ServedArm, ServiceError, served_bundles

KEY = "admin-key"


class Registry:
    """The one thing find_serving asks the run registry."""

    def __init__(self, last: Deployed | None = None) -> None:
        self.last = last

    def last_deployed(self) -> Deployed | None:
        return self.last


def config(**values: object) -> DictConfig:
    base = {"service_url": None, "serving_bundle": None, "reload": {"arm": None, "timeout_s": 5}}
    return OmegaConf.merge(base, values)  # type: ignore[return-value]


def folder(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    out.mkdir()
    (out / MANIFEST).write_text("{}")
    return out


def arm(bundle: Path | str, name: str | None = None, ref: str | None = None) -> ServedArm:
    return ServedArm(
        arm=name, bundle=str(bundle), ref=ref or str(bundle), tag=f"{Path(bundle).name}@abc", digest="d" * 64
    )


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What the fake service answers next: a list of arms, or a ServiceError to raise."""
    answer: list[object] = [[]]

    def fake(url: str, key: str, *, timeout_s: float) -> list[ServedArm]:
        assert key == KEY
        if isinstance(answer[0], Exception):
            raise answer[0]
        return answer[0]  # type: ignore[return-value]

    monkeypatch.setattr(reload, "served_bundles", fake)
    return answer


def test_without_a_service_serving_bundle_then_the_registry(tmp_path: Path) -> None:
    deployed = folder(tmp_path, "deployed")
    assert find_serving(config(serving_bundle="recstack:v1"), Registry(), None) == ServingRef(
        "recstack:v1", "serving_bundle"
    )
    registry = Registry(Deployed("run1", str(deployed), "recstack:v2"))
    assert find_serving(config(), registry, None) == ServingRef(str(deployed), "registry")
    assert find_serving(config(), Registry(Deployed("run1", str(tmp_path / "gone"), "recstack:v2")), None).ref == (
        "recstack:v2"
    )
    assert find_serving(config(), Registry(), None) == ServingRef(None, "none")


def test_the_service_answer_wins_and_its_arm_is_reload_arm(tmp_path: Path, service: list[object]) -> None:
    a, b = folder(tmp_path, "a"), folder(tmp_path, "b")
    service[0] = [arm(a, "mf"), arm(b, "lightgcn")]
    url = "http://service"
    found = find_serving(config(service_url=url, serving_bundle="recstack:v1"), Registry(), KEY)
    assert found == ServingRef(str(a), "service", "d" * 64)  # the first arm: the one a reload without an arm replaces
    found = find_serving(config(service_url=url, reload={"arm": "lightgcn"}), Registry(), KEY)
    assert (found.ref, found.source) == (str(b), "service")
    with pytest.raises(RetrainError, match="no such arm") as unknown:
        find_serving(config(service_url=url, reload={"arm": "ease"}), Registry(), KEY)
    assert unknown.value.code == ExitCode.CONFIG and "mf, lightgcn" in str(unknown.value)


def test_a_folder_this_machine_cannot_read_stops_the_run(
    tmp_path: Path, service: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))  # an empty model store
    service[0] = [arm("/srv/elsewhere/bundles/retrain-1")]
    with pytest.raises(RetrainError, match="which this machine cannot read") as error:
        find_serving(config(service_url="http://service", serving_bundle="recstack:v1"), Registry(), KEY)
    assert error.value.code == ExitCode.CONFIG == 2 and "/srv/elsewhere/bundles/retrain-1" in str(error.value)
    # Served from the BentoML store: the same tag in this machine's store would do; absent, the same refusal.
    service[0] = [arm("/srv/bentoml/models/recstack/x", ref="recstack:not-in-this-store")]
    with pytest.raises(RetrainError, match="is not in its BentoML store") as tagged:
        find_serving(config(service_url="http://service"), Registry(), KEY)
    assert tagged.value.code == ExitCode.CONFIG


def test_a_service_that_cannot_say_falls_back(
    tmp_path: Path, service: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    service[0] = ServiceError("http://service/admin/metadata could not be reached: refused")
    found = find_serving(config(service_url="http://service", serving_bundle="recstack:v1"), Registry(), KEY)
    assert found == ServingRef("recstack:v1", "serving_bundle")
    assert "falling back" in caplog.text
    service[0] = ServiceError("http://service/admin/metadata answered 404: no endpoint", 404)  # an older service
    deployed = folder(tmp_path, "deployed")
    found = find_serving(config(service_url="http://service"), Registry(Deployed("r", str(deployed), None)), KEY)
    assert found == ServingRef(str(deployed), "registry")


def test_a_refused_key_stops_the_run(service: list[object]) -> None:
    service[0] = ServiceError("http://service/admin/metadata answered 403: needs role 'admin'", 403)
    with pytest.raises(RetrainError, match="refuses this admin key") as error:
        find_serving(config(service_url="http://service", serving_bundle="recstack:v1"), Registry(), KEY)
    assert error.value.code == ExitCode.CONFIG


def test_the_bundle_read_here_must_be_the_one_served(
    tiny_bundle: Path, tmp_path: Path, service: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from recstack.export.model_store import save_to_store

    digest = Bundle.load(tiny_bundle).manifest.digest()
    assert load_serving(ServingRef(None, "none")) is None
    assert load_serving(ServingRef(str(tiny_bundle), "service", digest)).manifest.digest() == digest
    with pytest.raises(RetrainError, match="is not the bundle the service serves") as error:
        load_serving(ServingRef(str(tiny_bundle), "service", "0" * 64))
    assert error.value.code == ExitCode.CONFIG
    # A service serving a stored model from its own store's folder: the same model in this machine's store is used.
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    tag = save_to_store(tiny_bundle, name="retrain-test")
    service[0] = [
        ServedArm(None, "/srv/bentoml/models/retrain-test/v1", "/srv/bentoml/models/retrain-test/v1", tag, digest)
    ]
    found = find_serving(config(service_url="http://service"), Registry(), KEY)
    assert found.source == "service" and found.ref != tag and load_serving(found).manifest.digest() == digest


def test_a_malformed_answer_is_a_service_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload, "_call", lambda *args, **kwargs: {"status": "ready"})
    with pytest.raises(ServiceError, match="no per-arm bundles"):
        served_bundles("http://service", KEY)
