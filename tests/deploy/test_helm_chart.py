"""The Helm chart (deploy/helm/portcullis), rendered offline with the Helm SDK (helm-python-sdk): lint, every
object against the Kubernetes schemas (kubernetes-validate, strict) for the oldest and newest supported
versions, the ServiceMonitor against a vendored closed schema, every pod template against the restricted Pod
Security Standard (tests/deploy/pss.py), selectors against pod labels, and the values schema."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from portcullis.config.model import GatewayConfig
from tests.deploy import pss
from tests.deploy.tools import CHART

pytestmark = pytest.mark.xdist_group("tests/deploy/test_helm_chart.py")
K8S_VERSIONS = ("1.30", "1.37")  # the chart's kubeVersion floor and the newest schemas kubernetes-validate ships
SERVICE_MONITOR = jsonschema.Draft202012Validator(
    json.loads((Path(__file__).parent / "servicemonitor.schema.json").read_text()))
CLUSTER = yaml.safe_load((CHART / "values-cluster.yaml").read_text())
NAMESPACE = "gateway"
LOCALHOST_SECCOMP = {"type": "Localhost", "localhostProfile": "profiles/portcullis.json"}
Docs = list[dict[str, Any]]


def render(values: Mapping[str, Any] | None = None) -> Docs:
    rendered = helm_python.Chart.load(CHART).render(dict(values or {}), name="portcullis", namespace=NAMESPACE)
    return [doc for name, text in sorted(rendered.items()) if not name.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def renders() -> dict[str, Docs]:
    """One render per values file for the whole module (the SDK's render is the slow part)."""
    return {"default": render(), "cluster": render(CLUSTER),
            # the seccomp profile that lets bwrap make user namespaces (docs/kubernetes.md): still restricted
            "localhost": render({"seccompProfile": LOCALHOST_SECCOMP})}


def one(docs: Docs, kind: str, name: str = "portcullis") -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("values", ["default", "cluster"])
def test_helm_lint_reports_no_error_or_warning(values: str) -> None:
    """Helm's own lint (the SDK's, strict: warnings fail), with each values file: nothing above info ("icon is
    recommended")."""
    report = helm_python.lint(CHART, None if values == "default" else CLUSTER, strict=True,
                              kube_version=f"v{K8S_VERSIONS[0]}.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []


def test_helm_lint_can_fail(tmp_path: Path) -> None:
    """A template that fails to render is a lint error (the lint above is not a pass by default)."""
    broken = tmp_path / "portcullis"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "pdb.yaml").write_text("{{ .Values.missing.field }}\n")
    report = helm_python.lint(broken, None, strict=True)
    assert [m for m in report["messages"] if m["severity"] == 3]


def test_renders_hold_the_expected_objects(renders: dict[str, Docs]) -> None:
    """Embedded mode: one replica, no HPA or ServiceMonitor; cluster mode adds both."""
    kinds = {name: sorted(d["kind"] for d in docs) for name, docs in renders.items()}
    base = ["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service", "ServiceAccount"]
    assert kinds["default"] == base
    assert kinds["cluster"] == sorted([*base, "HorizontalPodAutoscaler", "ServiceMonitor"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("values", ["default", "cluster", "localhost"])
def test_every_object_validates_against_the_kubernetes_schemas(renders: dict[str, Docs], values: str,
                                                              version: str) -> None:
    """Strict schemas (unknown fields are errors) of that Kubernetes version; the ServiceMonitor (a CRD the
    schemas do not hold) against the vendored closed schema."""
    for doc in renders[values]:
        if doc["kind"] == "ServiceMonitor":
            SERVICE_MONITOR.validate(doc)
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validators_can_fail(renders: dict[str, Docs]) -> None:
    """A wrong type, an unknown field and a ServiceMonitor typo are all refused."""
    deployment = copy.deepcopy(one(renders["default"], "Deployment"))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    service = copy.deepcopy(one(renders["default"], "Service"))
    service["spec"]["ports"][0]["targetPorts"] = "mcp"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSIONS[-1], strict=True)
    monitor = copy.deepcopy(one(renders["cluster"], "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = monitor["spec"]["endpoints"][0].pop("interval")
    with pytest.raises(jsonschema.ValidationError):
        SERVICE_MONITOR.validate(monitor)


@pytest.mark.parametrize("values", ["default", "cluster", "localhost"])
def test_every_pod_template_meets_the_restricted_profile(renders: dict[str, Docs], values: str) -> None:
    """PodSecurity restricted, plus what the issue adds: read-only root, limits, no service-account token."""
    pods = [(doc["kind"], pod) for doc in renders[values] if (pod := pss.pod_template(doc)) is not None]
    assert pods
    for kind, pod in pods:
        assert pss.violations(pod) == [], kind
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        if values == "localhost":
            assert spec["securityContext"]["seccompProfile"] == LOCALHOST_SECCOMP
    account = one(renders[values], "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]  # type: ignore[no-any-return]


BREAKS = [
    ("hostNetwork", lambda p: p["spec"].update(hostNetwork=True)),
    ("hostPID", lambda p: p["spec"].update(hostPID=True)),
    ("hostIPC", lambda p: p["spec"].update(hostIPC=True)),
    ("hostProcess", lambda p: p["spec"]["securityContext"].update(windowsOptions={"hostProcess": True})),
    ("privileged", lambda p: _container(p)["securityContext"].update(privileged=True)),
    ("hostPath", lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}})),
    ("gitRepo", lambda p: p["spec"]["volumes"].append({"name": "g", "gitRepo": {"repository": "x"}})),
    ("hostPort", lambda p: _container(p)["ports"][0].update(hostPort=8080)),
    ("annotation container.apparmor", lambda p: p["metadata"]["annotations"].update(
        {"container.apparmor.security.beta.kubernetes.io/portcullis": "unconfined"})),
    ("appArmorProfile", lambda p: _container(p)["securityContext"].update(appArmorProfile={"type": "Unconfined"})),
    ("seLinuxOptions", lambda p: p["spec"]["securityContext"].update(seLinuxOptions={"type": "spc_t"})),
    ("procMount", lambda p: _container(p)["securityContext"].update(procMount="Unmasked")),
    ("sysctl", lambda p: p["spec"]["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}])),
    ("allowPrivilegeEscalation", lambda p: _container(p)["securityContext"].update(allowPrivilegeEscalation=True)),
    ("allowPrivilegeEscalation", lambda p: _container(p)["securityContext"].pop("allowPrivilegeEscalation")),
    ("runAsNonRoot", lambda p: _container(p)["securityContext"].update(runAsNonRoot=False)),
    ("runAsNonRoot", lambda p: (_container(p)["securityContext"].pop("runAsNonRoot"),
                                p["spec"]["securityContext"].pop("runAsNonRoot"))),
    ("runAsUser 0", lambda p: p["spec"]["securityContext"].update(runAsUser=0)),
    ("seccompProfile", lambda p: _container(p)["securityContext"].update(seccompProfile={"type": "Unconfined"})),
    ("seccompProfile", lambda p: (_container(p)["securityContext"].pop("seccompProfile"),
                                  p["spec"]["securityContext"].pop("seccompProfile"))),
    ("capabilities.drop", lambda p: _container(p)["securityContext"]["capabilities"].update(drop=["NET_RAW"])),
    ("capabilities.add", lambda p: _container(p)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"])),
    ("initContainers[bad]: privileged", lambda p: p["spec"].update(initContainers=[
        {**copy.deepcopy(_container(p)), "name": "bad",
         "securityContext": {**_container(p)["securityContext"], "privileged": True}}])),
]


@pytest.mark.parametrize(("rule", "brk"), BREAKS, ids=[f"{i}-{rule}" for i, (rule, _) in enumerate(BREAKS)])
def test_restricted_checker_catches_each_violation(renders: dict[str, Docs], rule: str, brk: Any) -> None:
    """The checker can fail: the chart's pod with exactly one rule broken is reported, naming that rule."""
    pod = copy.deepcopy(pss.pod_template(one(renders["default"], "Deployment")))
    assert pod is not None
    brk(pod)
    found = pss.violations(pod)
    assert any(rule in v for v in found), found
    assert len(found) == 1 or rule in ("runAsNonRoot", "seccompProfile"), found


@pytest.mark.parametrize("values", ["default", "cluster"])
def test_selectors_match_the_pod_labels(renders: dict[str, Docs], values: str) -> None:
    """NetworkPolicy, PDB and Services select the Deployment's pods; the HPA scales it; the ServiceMonitor
    selects the admin Service and names its port."""
    docs = renders[values]
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert matches(one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], labels)
    assert matches(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    for service in (d for d in docs if d["kind"] == "Service"):
        assert matches(service["spec"]["selector"], labels)
        container_ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    if values == "cluster":
        target = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert "replicas" not in deployment["spec"]  # the HPA owns the count
        monitor, admin = one(docs, "ServiceMonitor"), one(docs, "Service", "portcullis-admin")
        selected = [s["metadata"]["name"] for s in docs if s["kind"] == "Service"
                    and matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert selected == ["portcullis-admin"]
        assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in admin["spec"]["ports"]}
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_network_policy_denies_by_default_and_allows_only_what_is_declared(renders: dict[str, Docs]) -> None:
    """Both directions are policed; ingress reaches two ports from named peers only; egress is DNS plus the
    declared services; no rule without peers (which would allow everyone) is ever written."""
    for name in ("default", "cluster"):
        spec = one(renders[name], "NetworkPolicy")["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        for rule in spec["ingress"] + spec["egress"]:
            assert rule.get("from") or rule.get("to"), rule
            assert rule["ports"], rule
        assert sorted(p["port"] for r in spec["ingress"] for p in r["ports"]) == [8080, 9464]
        declared = [] if name == "default" else CLUSTER["networkPolicy"]["egress"]
        assert len(spec["egress"]) == 1 + len(declared)
        assert [p["port"] for p in spec["egress"][0]["ports"]] == [53, 53]
    closed = one(render({"networkPolicy": {"mcpFrom": [], "adminFrom": []}}), "NetworkPolicy")
    assert closed["spec"]["ingress"] == [] and closed["spec"]["policyTypes"] == ["Ingress", "Egress"]
    kubernetes_validate.validate(closed, K8S_VERSIONS[0], strict=True)


def test_rendered_gateway_yaml_is_a_valid_gateway_config(renders: dict[str, Docs]) -> None:
    """The ConfigMap's gateway.yaml passes the gateway's own model, listens where the Services point and allows
    the Services' names and the probes' Host."""
    config = GatewayConfig.model_validate(yaml.safe_load(one(renders["cluster"], "ConfigMap")["data"]["gateway.yaml"]))
    assert (config.listen.host, config.listen.port, config.admin.port) == ("0.0.0.0", 8080, 9464)
    assert f"portcullis.{NAMESPACE}.svc.cluster.local:*" in config.listen.allowed_hosts
    assert "localhost:*" in config.admin.allowed_hosts and config.state_dir == "/var/lib/portcullis"
    assert config.storage.postgresql is not None and config.storage.redis is not None
    env = one(renders["cluster"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {config.storage.postgresql.url_ref, config.storage.redis.url_ref, config.sessions.key_ref}
    assert {f"secret://env/{e['name']}" for e in env} == refs
    assert all(set(e["valueFrom"]) == {"secretKeyRef"} for e in env)  # by reference to existing Secrets only


def test_rendered_cluster_deployment_lints_clean(renders: dict[str, Docs], tmp_path: Path) -> None:
    """`portcullis lint` finds nothing in the cluster values' gateway.yaml (with its secrets' variables set)."""
    from portcullis.config.loader import lint_deployment

    (tmp_path / "gateway.yaml").write_text(one(renders["cluster"], "ConfigMap")["data"]["gateway.yaml"])
    env = {e["name"]: "set" for e in CLUSTER["secretEnv"]}
    assert [str(p) for p in lint_deployment(tmp_path, env)] == []


def test_deployment_files_are_mounted_at_their_paths() -> None:
    """Manifests and policy files given as values land at their relative paths under /etc/portcullis."""
    docs = render({"deploymentFiles": {"tools/billing/refund.yml": "name: refund\n", "policy/x.rego": "package x\n"}})
    data = one(docs, "ConfigMap")["data"]
    [source] = [v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
                if v["name"] == "deployment-src"]
    items = source["configMap"]["items"]
    paths = {item["path"]: data[item["key"]] for item in items}
    assert paths["tools/billing/refund.yml"] == "name: refund\n" and paths["policy/x.rego"] == "package x\n"
    assert "gateway.yaml" in paths


@pytest.mark.parametrize("bad", [
    {"replicaCount": "three"}, {"replicaCount": 0}, {"image": {"repository": "r", "digest": "sha256:short"}},
    {"unknownKey": True}, {"service": {"mcpPort": 70000}}, {"seccompProfile": {"type": "Unconfined"}},
    {"seccompProfile": {"type": "Localhost"}}, {"secretEnv": [{"name": "A B", "secretName": "s", "key": "k"}]},
    {"networkPolicy": {"egress": [{"name": "db", "to": [], "ports": [{"port": 5432}]}]}},
    {"deploymentFiles": {"../etc/passwd": "x"}}, {"deploymentFiles": {"tools/../../x.yml": "x"}},
    {"resources": {"limits": {"memory": None}}}, {"gateway": {"version": 2}},
    {"terminationGracePeriodSeconds": 5},
])
def test_values_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    """values.schema.json refuses wrong types, unknown keys, weakened seccomp, empty egress peers, paths out of
    the deployment directory, missing memory limits."""
    with pytest.raises(helm_python.HelmValuesError):
        helm_python.Chart.load(CHART).validate_schema(bad)


def test_a_state_volume_is_never_shared_by_two_pods() -> None:
    """With a PersistentVolumeClaim for the state directory the rollout is Recreate; otherwise rolling."""
    deployment = one(render({"state": {"existingClaim": "portcullis-state"}}), "Deployment")
    kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    claimed = deployment["spec"]
    assert claimed["strategy"] == {"type": "Recreate"}
    [state] = [v for v in claimed["template"]["spec"]["volumes"] if v["name"] == "state"]
    assert state == {"name": "state", "persistentVolumeClaim": {"claimName": "portcullis-state"}}
    assert one(render(), "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"


def test_several_replicas_without_shared_state_do_not_render() -> None:
    """replicaCount > 1 or autoscaling in the embedded mode fails at render, naming what is missing."""
    for values in ({"replicaCount": 2}, {"autoscaling": {"enabled": True}}):
        with pytest.raises(helm_python.HelmError, match=r"gateway\.storage\.postgresql"):
            render(values)


def kubelet_config_volume(root: Path, files: Mapping[str, str]) -> Path:
    """A ConfigMap volume as the kubelet lays it out: the files in a timestamped directory behind ``..data``."""
    stamped = root / "..2026_12_06_11_00_00.1"
    for rel, content in files.items():
        (stamped / rel).parent.mkdir(parents=True, exist_ok=True)
        (stamped / rel).write_text(content)
    (root / "..data").symlink_to(stamped.name)
    for top in {Path(rel).parts[0] for rel in files}:
        (root / top).symlink_to(f"..data/{top}")
    return root


def run_config_script(renders: dict[str, Docs], tmp_path: Path, pod_ip: str) -> subprocess.CompletedProcess[str]:
    [init] = one(renders["cluster"], "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][:3] == ["/opt/venv/bin/python", "-I", "-c"]
    gateway_yaml = one(renders["cluster"], "ConfigMap")["data"]["gateway.yaml"]
    src = kubelet_config_volume(tmp_path / "src", {"gateway.yaml": gateway_yaml, "tools/billing/refund.yml": "x: 1\n"})
    (tmp_path / "dst").mkdir()
    script = init["command"][3].replace('"/etc/portcullis-src"', repr(str(src))).replace(
        '"/etc/portcullis"', repr(str(tmp_path / "dst")))
    return subprocess.run([sys.executable, "-I", "-c", script], env={**os.environ, "POD_IP": pod_ip},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("pod_ip", "allowed"), [("10.1.2.3", "10.1.2.3:*"), ("fd00::5", "[fd00::5]:*")])
def test_init_container_copies_the_deployment_and_allows_the_pod_address(
        renders: dict[str, Docs], tmp_path: Path, pod_ip: str, allowed: str) -> None:
    """The init script copies every file (not the kubelet's ``..data`` indirection) and adds the pod's own
    address to the admin Host allow-list, so Prometheus scraping the pod IP is accepted."""
    done = run_config_script(renders, tmp_path, pod_ip)
    assert done.returncode == 0, done.stderr
    dst = tmp_path / "dst"
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == [
        "gateway.yaml", "tools/billing/refund.yml"]
    config = GatewayConfig.model_validate(yaml.safe_load((dst / "gateway.yaml").read_text()))
    assert config.admin.allowed_hosts[-1] == allowed
    assert allowed not in config.listen.allowed_hosts


@pytest.mark.parametrize("pod_ip", ["", "evil.example.com", "10.0.0.1:*, *", "10.0.0.1\nx"])
def test_init_container_refuses_an_address_that_is_not_one(renders: dict[str, Docs], tmp_path: Path,
                                                           pod_ip: str) -> None:
    """Anything but an IP address in POD_IP stops the pod from starting (nothing is added to the allow-list)."""
    done = run_config_script(renders, tmp_path, pod_ip)
    assert done.returncode != 0
    assert "ValueError" in done.stderr
