"""Checks of the deployment artefacts beyond their schemas (run by tests/tests/it/deploy.rs).

usage: check_deploy.py ROOT RENDERED_BASE.yaml RENDERED_PRODUCTION.yaml

Prints one JSON object: the ConfigMap environments and the container commands of each
rendering, for the Rust test to try against the real binary. Any violation is an assertion
error naming the object.
"""
import json
import re
import sys

import yaml

root, renders = sys.argv[1], {"base": sys.argv[2], "production": sys.argv[3]}


def dockerfile_checks():
    text = open(f"{root}/Dockerfile").read()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 3, f"multi-stage build expected, got {stages}"
    final = text.split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and not users[-1].split(":")[0] in ("0", "root"), f"the runtime stage must run as non-root: {users}"
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/driftwood"\]', final, re.M), "one image, driftwood as entrypoint"
    setup = open(f"{root}/scripts/setup").read()
    torch = re.search(r"^TORCH_VERSION=(\S+)", setup, re.M).group(1)
    assert f"ARG TORCH_VERSION={torch}" in text, f"the image's libtorch must be setup's torch {torch}"
    assert '"torch==${TORCH_VERSION}"' in text, "libtorch comes from the PyPI torch wheel"


def compose_checks():
    compose = yaml.safe_load(open(f"{root}/docker-compose.yml"))
    services = compose["services"]
    for name, s in services.items():
        assert "healthcheck" in s, f"compose service {name} has no health check"
    roles = services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert "controller" in roles and "broker" in roles, "Kafka must run in KRaft mode"
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    assert "./monitoring" in mounts and "provisioning" in mounts, "Prometheus and Grafana use monitoring/"
    assert services["scylla"]["image"].startswith("scylladb/scylla:"), "the metadata store runs on ScyllaDB"
    shared = compose["x-driftwood"]
    assert shared["environment"]["DRIFTWOOD_STORE_BACKEND"] == "scylla", "Driftwood uses the ScyllaDB store"
    assert shared["environment"]["DRIFTWOOD_STORE_NODES"].startswith("scylla:"), "and finds it by service name"
    assert shared["depends_on"]["scylla"]["condition"] == "service_healthy", "Driftwood starts after ScyllaDB"
    images = {s["image"] for n, s in services.items() if n.startswith("driftwood")}
    assert len(images) == 1, f"one image for every Driftwood service: {images}"
    for n, s in services.items():
        if n.startswith("driftwood"):
            assert any("/var/lib/driftwood/data" in v for v in s["volumes"]), f"{n} has no data volume"
    for secret in compose.get("secrets", {}).values():
        assert secret["file"].startswith("./deploy/secrets/"), secret
    ignored = open(f"{root}/.gitignore").read()
    assert "/deploy/secrets/" in ignored, "compose secrets must be git-ignored"
    return [s["command"] for n, s in services.items() if n.startswith("driftwood")]


def k8s_checks(name, path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    assert "Secret" not in kinds, f"{name}: secrets must not be in git"
    for kind in ("Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                 "NetworkPolicy", "ServiceMonitor"):
        assert kind in kinds, f"{name}: no {kind}"
    config = kinds["ConfigMap"][0]["data"]
    partitions = int(config["DRIFTWOOD_KAFKA_PARTITIONS"])
    deployments = {d["metadata"]["name"]: d for d in kinds["Deployment"]}
    commands = []
    for dname, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert pod["securityContext"].get("runAsNonRoot") is True, f"{name}/{dname}: runAsNonRoot"
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", dname
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            where = f"{name}/{dname}/{c['name']}"
            assert c.get("readinessProbe") and c.get("livenessProbe"), f"{where}: probes"
            res = c.get("resources", {})
            assert res.get("requests") and res.get("limits"), f"{where}: requests and limits"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert any(e.get("configMapRef", {}).get("name") == "driftwood-config" for e in c["envFrom"]), where
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{where}: mount {m['name']} has no volume"
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in (c["readinessProbe"], c["livenessProbe"]):
                port = (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
                assert port in ports, f"{where}: probe port {port} is not a container port"
            commands.append(c["args"])
        for v in volumes.values():
            if "secret" in v:
                assert v["secret"]["secretName"].startswith("driftwood-"), v
        d["_labels"] = labels
        d["_ports"] = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
    # Scaling rule: scorers (the api Deployment) and snapshot workers <= partitions of text.raw.
    for hpa in kinds["HorizontalPodAutoscaler"]:
        target = hpa["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"{name}: HPA targets unknown {target}"
        assert hpa["spec"]["maxReplicas"] <= partitions, f"{name}: {target} may scale past {partitions} partitions"
        assert deployments[target]["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert deployments["driftwood-snapshot"]["spec"]["replicas"] <= partitions, f"{name}: snapshot workers"
    for single in ("driftwood-scored-snapshot", "driftwood-drift", "driftwood-retrainer"):
        assert deployments[single]["spec"]["replicas"] == 1, f"{name}: {single} is a single writer"

    def selects(selector, labels):
        return all(labels.get(k) == v for k, v in selector.items())

    services = {}
    for s in kinds["Service"]:
        matched = [d for d in deployments.values() if selects(s["spec"]["selector"], d["_labels"])]
        assert matched, f"{name}: service {s['metadata']['name']} selects no pod"
        for p in s["spec"]["ports"]:
            assert all(p["targetPort"] in d["_ports"] for d in matched), f"{name}: {s['metadata']['name']} port {p}"
        services[s["metadata"]["name"]] = s
    for pdb in kinds["PodDisruptionBudget"]:
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(selects(sel, d["_labels"]) for d in deployments.values()), f"{name}: PDB selects nothing"
    for sm in kinds["ServiceMonitor"]:
        sel = sm["spec"]["selector"]
        matched = [
            s for s in services.values()
            if selects(sel.get("matchLabels", {}), s["metadata"].get("labels", {}))
            and all(s["metadata"].get("labels", {}).get(e["key"]) in e["values"] for e in sel.get("matchExpressions", []))
        ]
        assert matched, f"{name}: ServiceMonitor {sm['metadata']['name']} selects no service"
        for e in sm["spec"]["endpoints"]:
            assert all(any(p["name"] == e["port"] for p in s["spec"]["ports"]) for s in matched), e
    policies = kinds["NetworkPolicy"]
    assert any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in policies), \
        f"{name}: no default-deny NetworkPolicy"
    return {"config": config, "commands": commands}


dockerfile_checks()
out = {"compose_commands": compose_checks()}
for name, path in renders.items():
    out[name] = k8s_checks(name, path)
print(json.dumps(out))
