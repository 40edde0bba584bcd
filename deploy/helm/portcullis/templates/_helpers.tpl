{{/* Names and labels. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" }}
{{- else if contains (include "portcullis.name" .) .Release.Name }}
{{- .Release.Name | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "portcullis.name" .) | trunc 57 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portcullis.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Host allow-list entries for a Service name: every name it is reached by inside the cluster. */}}
{{- define "portcullis.serviceHosts" -}}
{{- $ns := .root.Release.Namespace }}
{{- range list .name (printf "%s.%s" .name $ns) (printf "%s.%s.svc" .name $ns) (printf "%s.%s.svc.%s" .name $ns .root.Values.clusterDomain) }}
- {{ printf "%s:*" . | quote }}
{{- end }}
{{- end }}

{{/*
gateway.yaml: the operator's gateway values, with where the gateway listens and its state directory set by
the chart (the Services and probes depend on them). Loopback stays allowed on the admin listener: the
kubelet's probes send Host: localhost.
*/}}
{{- define "portcullis.gatewayConfig" -}}
{{- $fullname := include "portcullis.fullname" . }}
{{- $cfg := deepCopy .Values.gateway }}
{{- $listen := deepCopy (get $cfg "listen" | default dict) }}
{{- $mcpHosts := include "portcullis.serviceHosts" (dict "root" . "name" $fullname) | fromYamlArray }}
{{- $_ := set $listen "host" "0.0.0.0" }}
{{- $_ := set $listen "port" (int .Values.service.mcpPort) }}
{{- $_ := set $listen "allowed_hosts" (concat $mcpHosts .Values.allowedHosts.mcp | uniq) }}
{{- $_ := set $cfg "listen" $listen }}
{{- $admin := deepCopy (get $cfg "admin" | default dict) }}
{{- $adminHosts := include "portcullis.serviceHosts" (dict "root" . "name" (printf "%s-admin" $fullname)) | fromYamlArray }}
{{- $_ := set $admin "host" "0.0.0.0" }}
{{- $_ := set $admin "port" (int .Values.service.adminPort) }}
{{- $_ := set $admin "allowed_hosts" (concat (list "localhost:*" "127.0.0.1:*") $adminHosts .Values.allowedHosts.admin | uniq) }}
{{- $_ := set $cfg "admin" $admin }}
{{- $_ := set $cfg "state_dir" "/var/lib/portcullis" }}
{{- toYaml $cfg }}
{{- end }}

{{/* Refuse what cannot work: several replicas need the cluster mode's shared state (docs/cluster.md). */}}
{{- define "portcullis.checkMode" -}}
{{- $storage := get .Values.gateway "storage" | default dict }}
{{- $sessions := get .Values.gateway "sessions" | default dict }}
{{- $shared := and (get $storage "postgresql") (get $storage "redis") (get $sessions "key_ref") }}
{{- if and (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) (not $shared) }}
{{- fail "more than one replica (replicaCount > 1 or autoscaling.enabled) needs gateway.storage.postgresql, gateway.storage.redis and gateway.sessions.key_ref (docs/cluster.md)" }}
{{- end }}
{{- end }}

{{/*
The init container's script: copies the deployment from the ConfigMap (skipping the kubelet's `..data`
indirection) to the directory the gateway reads, and adds this pod's own address to the admin listener's Host
allow-list, so a Prometheus that scrapes pod IPs (a ServiceMonitor) is not refused with 421. POD_IP comes from
the downward API and must parse as an IP address; anything else stops the pod from starting.
*/}}
{{- define "portcullis.configScript" -}}
import ipaddress, os, pathlib, shutil, yaml
src, dst = pathlib.Path("/etc/portcullis-src"), pathlib.Path("/etc/portcullis")
for top, dirs, files in os.walk(src, followlinks=True):
    dirs[:] = [d for d in dirs if not d.startswith("..")]
    for name in files:
        if not name.startswith(".."):
            rel = pathlib.Path(top, name).relative_to(src)
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dst / rel)
ip = ipaddress.ip_address(os.environ["POD_IP"])
config = yaml.safe_load((dst / "gateway.yaml").read_text())
config["admin"]["allowed_hosts"].append(f"[{ip}]:*" if ip.version == 6 else f"{ip}:*")
(dst / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
{{- end }}

{{- define "portcullis.containerSecurityContext" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  {{- toYaml .Values.seccompProfile | nindent 2 }}
{{- end }}
