"""``recstack-serve bundle=<tag-or-path> [port=3000 host=127.0.0.1 redis_url=... workers=2]``.

A thin Hydra app over ``configs/serve.yaml``: it validates the composed config (:class:`ServeSettings`), verifies the
bundle's files against their sha256 before any worker starts (exit 2 with the reason, no BentoML started), then runs
``bentoml serve serving.service:Recommender`` under :class:`~recstack.serving.supervisor.Supervisor`, which prints
``recstack-serve: ready on <url>`` once every worker is up, stops the tree if a worker fails or dies, and forwards
SIGTERM/SIGINT (a container's PID 1 works). The workers get the settings as one JSON variable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from recstack.config import config_dir
from recstack.serving.settings import ServeSettings
from recstack.serving.supervisor import Supervisor

SERVICE = "serving.service:Recommender"
EXIT_BAD_BUNDLE = 2


def project_root() -> Path:
    """The folder holding ``serving/service.py`` (the repository root, or the image's working directory)."""
    for candidate in (Path.cwd(), config_dir().parent):
        if (candidate / "serving" / "service.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"serving/service.py not found in {Path.cwd()} or {config_dir().parent}; run recstack-serve from the "
        "repository root (or the image's /app)"
    )


def settings_from(cfg: DictConfig) -> ServeSettings:
    """The composed config, typed; a relative bundle path is made absolute (relative to where the user typed it)."""
    settings = ServeSettings.from_config(cfg)
    if settings.bundle and Path(settings.bundle).exists():
        settings = settings.model_copy(update={"bundle": str(Path(settings.bundle).resolve())})
    arms = settings.experiment.arms
    if any(Path(arm.bundle).exists() for arm in arms.values()):
        absolute = {
            name: arm.model_copy(update={"bundle": str(Path(arm.bundle).resolve())})
            if Path(arm.bundle).exists()
            else arm
            for name, arm in arms.items()
        }
        experiment = settings.experiment.model_copy(update={"arms": absolute})
        settings = settings.model_copy(update={"experiment": experiment})
    return settings


def bundle_folder(ref: str) -> Path:
    """A bundle folder, or the folder of a BentoML model tag in the local model store."""
    if Path(ref).exists():
        return Path(ref)
    import bentoml

    try:
        return Path(bentoml.models.get(ref).path)
    except Exception as error:  # NotFound, or a malformed tag
        raise FileNotFoundError(
            f"bundle {ref!r} is neither a folder nor a model in the BentoML store ({error}); "
            "pass a bundle folder or save one with recstack.export.model_store.save_to_store"
        ) from error


def verify_bundle(ref: str) -> str:
    """Check every file of the bundle against the manifest's sha256 (and the manifest's own digest)."""
    from recstack.bundle.reader import read_manifest, verify_files

    root = bundle_folder(ref)
    manifest = read_manifest(root, verify=True)
    verify_files(root, manifest, hashes=True)
    return f"bundle {root} verified ({len(manifest.files)} files, sha256)"


def serve_command(settings: ServeSettings, base_env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` argv and environment for validated settings (pure, so tests can check it)."""
    env = dict(os.environ if base_env is None else base_env)
    env.update(settings.to_env())
    # One request is one small search and one small ORT call: threads inside them only contend with the other
    # workers for the same cores. BentoML's usage-tracking thread is off too.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    if settings.bentoml_config:
        env["BENTOML_CONFIG"] = str(Path(settings.bentoml_config).resolve())
    root = project_root()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    bentoml = Path(sys.executable).with_name("bentoml")
    argv = [str(bentoml) if bentoml.exists() else "bentoml", "serve", SERVICE]
    argv += ["--working-dir", str(root), "--host", settings.host, "--port", str(settings.port)]
    return argv, env


def run(settings: ServeSettings) -> int:
    """Verify, then serve until stopped; the process exit code."""
    try:
        for ref in settings.arm_bundles().values():  # one bundle, or one per A/B arm
            print(f"recstack-serve: {verify_bundle(ref)}", flush=True)
        if settings.collect:
            settings.collector.hmac_key()  # the collector pseudonymises with it: no key, no start (and no worker loop)
        settings.access_policy()  # auth on needs a readable key file: checked here, not in every worker
    except (OSError, ValueError, RuntimeError) as error:  # BundleError is a ValueError
        print(f"recstack-serve: not starting: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_BUNDLE
    # The workers load them without hashing them again (1 hash per start, not 1 + workers).
    settings = settings.model_copy(update={"bundle_verified": True})
    argv, env = serve_command(settings)
    print(f"recstack-serve: {' '.join(argv)} ({settings.workers} workers)", flush=True)
    host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    return Supervisor(
        argv=argv,
        env=env,
        url=f"http://{host}:{settings.port}",
        workers=settings.workers,
        startup_timeout_s=settings.startup_timeout_s,
        stop_timeout_s=settings.stop_timeout_s,
    ).run()


@hydra.main(config_path=str(config_dir()), config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sys.exit(run(settings_from(cfg)))


if __name__ == "__main__":
    main()
