"""A checker for the Kubernetes Pod Security Standards' **restricted** profile (which includes baseline).

No policy engine that runs offline is in the registries (kube-linter, kyverno, polaris, kubeconform: none), so
the rules of https://kubernetes.io/docs/concepts/security/pod-security-standards/ are written out here, one
numbered step each, over a pod spec as a workload renders it. :func:`violations` returns what breaks them
(empty: the pod is admitted under ``pod-security.kubernetes.io/enforce: restricted``). tests/deploy tests the
checker itself with manifests that break one rule each, so it can fail.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes"})
ALLOWED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                             "projected", "secret"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
POD_KINDS = {"Pod": (), "Deployment": ("spec", "template"), "ReplicaSet": ("spec", "template"),
             "StatefulSet": ("spec", "template"), "DaemonSet": ("spec", "template"), "Job": ("spec", "template"),
             "CronJob": ("spec", "jobTemplate", "spec", "template")}


def pod_template(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod (metadata + spec) a workload creates, or None for a kind that creates none."""
    path = POD_KINDS.get(doc.get("kind", ""))
    if path is None:
        return None
    node: Any = doc
    for key in path:
        node = node[key]
    return node  # type: ignore[no-any-return]


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or ():
            yield f"{field}[{container.get('name')}]", container


def violations(pod: Mapping[str, Any]) -> list[str]:
    """Every rule of the restricted profile that ``pod`` (``{metadata, spec}``) breaks."""
    spec, annotations = pod["spec"], (pod.get("metadata") or {}).get("annotations") or {}
    psc = spec.get("securityContext") or {}
    found: list[str] = []
    containers = list(_containers(spec))
    # baseline 1. HostProcess
    for where, sc in [("pod", psc), *((n, c.get("securityContext") or {}) for n, c in containers)]:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{where}: windowsOptions.hostProcess")
    # baseline 2. host namespaces
    found += [f"pod: {field}" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)]
    # baseline 3. privileged containers
    found += [f"{n}: privileged" for n, c in containers if (c.get("securityContext") or {}).get("privileged")]
    # baseline 5. hostPath volumes; restricted 1. volume types
    for volume in spec.get("volumes") or ():
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume.get('name')}: type {sorted(kinds - ALLOWED_VOLUMES)}")
    # baseline 6. host ports
    found += [f"{n}: hostPort {p['hostPort']}" for n, c in containers for p in c.get("ports") or ()
              if p.get("hostPort")]
    # baseline 7. AppArmor (annotations and fields)
    found += [f"annotation {k}: {v}" for k, v in annotations.items()
              if k.startswith("container.apparmor.security.beta.kubernetes.io/") and v not in ("runtime/default",)
              and not str(v).startswith("localhost/")]
    for where, sc in [("pod", psc), *((n, c.get("securityContext") or {}) for n, c in containers)]:
        apparmor = sc.get("appArmorProfile") or {}
        if apparmor and apparmor.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{where}: appArmorProfile {apparmor.get('type')}")
        # baseline 8. SELinux
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where}: seLinuxOptions {selinux}")
    # baseline 9. /proc mount
    found += [f"{n}: procMount {(c.get('securityContext') or {})['procMount']}" for n, c in containers
              if (c.get("securityContext") or {}).get("procMount", "Default") != "Default"]
    # baseline 11. sysctls
    found += [f"pod: sysctl {s.get('name')}" for s in psc.get("sysctls") or () if s.get("name") not in SAFE_SYSCTLS]
    # restricted 2. privilege escalation
    found += [f"{n}: allowPrivilegeEscalation not false" for n, c in containers
              if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False]
    # restricted 3. running as non-root (pod level, or every container), never false anywhere
    for n, c in containers:
        sc = c.get("securityContext") or {}
        own = sc.get("runAsNonRoot")
        if own is False or (own is not True and psc.get("runAsNonRoot") is not True):
            found.append(f"{n}: runAsNonRoot not true")
    # restricted 4. running as non-root user
    found += [f"{where}: runAsUser 0" for where, sc in [("pod", psc), *((n, c.get("securityContext") or {})
                                                                        for n, c in containers)]
              if sc.get("runAsUser") == 0]
    # restricted 5. seccomp (baseline 10: never Unconfined)
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    for n, c in containers:
        own = ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        if own not in (None, "RuntimeDefault", "Localhost") or (own is None and pod_seccomp not in (
                "RuntimeDefault", "Localhost")):
            found.append(f"{n}: seccompProfile {own or pod_seccomp}")
    # restricted 6. capabilities (drop ALL, add only NET_BIND_SERVICE)
    for n, c in containers:
        caps = (c.get("securityContext") or {}).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            found.append(f"{n}: capabilities.drop lacks ALL")
        extra = set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}
        if extra:
            found.append(f"{n}: capabilities.add {sorted(extra)}")
    return found
