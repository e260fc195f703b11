"""deploy/kubernetes/recstack.yaml agrees with the code it deploys: the serving arguments compose into valid settings
on the Dockerfile's entrypoint, probes hit public routes, every RECSTACK_* variable is one the configs read, selectors
match their pods, and the consumer runs a real recstack-collect command. (No cluster here: the Kubernetes API schema
itself is not checked.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from recstack.cli.collect import COMMANDS
from recstack.serving.access import PUBLIC_ROUTES
from recstack.serving.settings import ServeSettings

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "kubernetes" / "recstack.yaml"


def documents() -> dict[tuple[str, str], dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def entrypoint() -> list[str]:
    line = next(x for x in (REPO / "Dockerfile").read_text().splitlines() if x.startswith("ENTRYPOINT"))
    return json.loads(line.removeprefix("ENTRYPOINT").strip())


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def test_serving_arguments_compose_into_valid_settings() -> None:
    serve = container(documents()[("Deployment", "recstack-serve")])
    command = entrypoint()
    assert command[0] == "recstack-serve"
    settings = ServeSettings.compose([*command[1:], *serve["args"]])
    (port,) = serve["ports"]
    assert settings.port == port["containerPort"] and settings.host == "0.0.0.0"


def test_probes_hit_public_routes() -> None:
    serve = container(documents()[("Deployment", "recstack-serve")])
    for probe in ("readinessProbe", "livenessProbe"):
        assert serve[probe]["httpGet"]["path"] in PUBLIC_ROUTES


def test_every_variable_is_one_the_configs_read() -> None:
    read = set(
        re.findall(r"oc\.env:(RECSTACK_[A-Z_]+)", "".join(p.read_text() for p in (REPO / "configs").rglob("*.yaml")))
    )
    read |= {"RECSTACK_HMAC_KEY"}  # configs/collector/default.yaml: hmac_key_env
    docs = documents()
    for name in ("recstack-serve", "recstack-consumer"):
        for var in container(docs[("Deployment", name)])["env"]:
            assert var["name"] in read, f"{name}: {var['name']} is read by no config"


def test_selectors_match_their_pods_and_the_service_port_exists() -> None:
    docs = documents()
    for name in ("recstack-serve", "recstack-consumer"):
        spec = docs[("Deployment", name)]["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    serve = docs[("Deployment", "recstack-serve")]["spec"]["template"]
    service = docs[("Service", "recstack")]["spec"]
    assert service["selector"].items() <= serve["metadata"]["labels"].items()
    names = {p["name"] for p in container({"spec": {"template": serve}})["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= names
    pdb = docs[("PodDisruptionBudget", "recstack-serve")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= serve["metadata"]["labels"].items()


def test_the_consumer_runs_a_real_command_on_its_volume() -> None:
    consumer = documents()[("Deployment", "recstack-consumer")]
    main = container(consumer)
    assert main["command"][:2] == ["recstack-collect", "consume"] and main["command"][1] in COMMANDS
    lake = next(v["value"] for v in main["env"] if v["name"] == "RECSTACK_LAKE")
    assert any(m["mountPath"] == lake for m in main["volumeMounts"])
    assert consumer["spec"]["replicas"] == 1  # one consumer per stream
