"""recstack-serve composes configs/serve.yaml into the `bentoml serve` command and environment the service reads."""

from __future__ import annotations

from pathlib import Path

from recstack.cli.serve import SERVICE, serve_command
from recstack.config import compose


def test_serve_command_from_config(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    cfg = compose("serve", [f"bundle={bundle}", "port=3123", "workers=2", "redis_url=redis://10.0.0.1:6380/3"])
    argv, env = serve_command(cfg, base_env={})
    assert argv[1:3] == ["serve", SERVICE]
    assert argv[argv.index("--port") + 1] == "3123" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert env["RECSTACK_BUNDLE"] == str(bundle.resolve())
    assert env["RECSTACK_WORKERS"] == "2" and env["RECSTACK_REDIS_URL"] == "redis://10.0.0.1:6380/3"
    assert env["RECSTACK_REDIS_TIMEOUT_S"] == "0.02" and env["RECSTACK_N_CANDIDATES"] == "200"
    assert env["OMP_NUM_THREADS"] == "1" and env["BENTOML_DO_NOT_TRACK"] == "True"
    assert env["RECSTACK_TRACING"] == "0" and env["RECSTACK_ACCESS_LOG"] == "0"
    _, traced = serve_command(compose("serve", [f"bundle={bundle}", "tracing=true"]), base_env={})
    assert traced["RECSTACK_TRACING"] == "1"
    assert (Path(env["PYTHONPATH"].split(":")[0]) / "serving" / "service.py").is_file()


def test_a_tag_is_passed_through() -> None:
    _, env = serve_command(compose("serve", ["bundle=recstack:latest"]), base_env={})
    assert env["RECSTACK_BUNDLE"] == "recstack:latest"
