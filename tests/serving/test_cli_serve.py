"""recstack-serve composes configs/serve.yaml into one typed settings object, handed to the workers as one variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recstack.cli.serve import SERVICE, serve_command, settings_from
from recstack.config import compose
from recstack.serving.settings import SETTINGS_ENV, ServeSettings


def test_serve_command_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = compose("serve", ["bundle=bundle", "port=3123", "workers=2", "redis_url=redis://10.0.0.1:6380/3"])
    settings = settings_from(cfg)
    argv, env = serve_command(settings, base_env={})
    assert argv[1:3] == ["serve", SERVICE]
    assert argv[argv.index("--port") + 1] == "3123" and argv[argv.index("--host") + 1] == "127.0.0.1"
    passed = ServeSettings.model_validate_json(env[SETTINGS_ENV])
    assert passed == settings and passed.bundle == str(bundle.resolve())  # relative to where it was typed
    assert passed.workers == 2 and passed.redis_url == "redis://10.0.0.1:6380/3"
    # configs/serve.yaml's defaults, whatever they are today
    assert passed.redis_timeout_s == cfg.redis_timeout_s and passed.n_candidates == cfg.n_candidates
    assert not passed.bundle_verified  # only run() sets it, after hashing the bundle
    assert env["OMP_NUM_THREADS"] == "1" and env["BENTOML_DO_NOT_TRACK"] == "True"
    assert not any(k.startswith("RECSTACK_") and k != SETTINGS_ENV for k in env)  # one variable, not eleven
    assert (Path(env["PYTHONPATH"].split(":")[0]) / "serving" / "service.py").is_file()


def test_a_tag_is_passed_through() -> None:
    _, env = serve_command(settings_from(compose("serve", ["bundle=recstack:latest"])), base_env={})
    assert json.loads(env[SETTINGS_ENV])["bundle"] == "recstack:latest"


def test_settings_are_typed_and_closed() -> None:
    with pytest.raises(ValueError, match="workers"):
        ServeSettings.compose(["bundle=x", "workers=0"])
    with pytest.raises(ValueError, match="colour"):
        ServeSettings.from_config({**ServeSettings.compose(["bundle=x"]).model_dump(), "colour": "red"})


def test_a_bare_worker_composes_serve_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.setenv("RECSTACK_BUNDLE", "recstack:latest")
    settings = ServeSettings.from_env()
    assert settings.bundle == "recstack:latest" and settings == ServeSettings.compose(["bundle=recstack:latest"])
    monkeypatch.delenv("RECSTACK_BUNDLE")
    with pytest.raises(RuntimeError, match="recstack-serve bundle="):
        ServeSettings.from_env().require_bundle()


def test_workers_skip_hashing_only_after_recstack_serve_verified(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recstack.cli.serve as cli

    started: dict = {}

    class Recorded:
        def __init__(self, **kwargs: object) -> None:
            started.update(kwargs)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(cli, "Supervisor", Recorded)
    assert cli.run(settings_from(compose("serve", [f"bundle={tiny_bundle}", "auth=false"]))) == 0
    passed = ServeSettings.model_validate_json(started["env"][SETTINGS_ENV])  # type: ignore[index]
    assert passed.bundle_verified  # hashed once here; the workers load with verify=False
    # a user cannot switch verification off by configuration, and a bare worker (no recstack-serve) verifies
    with pytest.raises(ValueError, match="bundle_verified is not a setting"):
        ServeSettings.from_config({**ServeSettings.compose(["bundle=x"]).model_dump(), "bundle_verified": True})
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.setenv("RECSTACK_BUNDLE", str(tiny_bundle))
    assert not ServeSettings.from_env().bundle_verified


def test_no_pseudonymisation_key_is_a_clear_refusal_before_any_worker(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from recstack.cli.serve import run

    monkeypatch.delenv("RECSTACK_HMAC_KEY", raising=False)
    monkeypatch.delenv("RECSTACK_HMAC_KEY_FILE", raising=False)
    settings = ServeSettings.compose([f"bundle={tiny_bundle}", "collector.hmac_key_file=null"])
    assert run(settings) == 2
    assert "no pseudonymisation key" in capsys.readouterr().err
