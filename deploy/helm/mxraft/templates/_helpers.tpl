{{/* The chart's name. */}}
{{- define "mxraft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The StatefulSet's name and the prefix of every object; pod names add "-<ordinal>". */}}
{{- define "mxraft.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mxraft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mxraft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mxraft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mxraft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The headless Service that names each pod. */}}
{{- define "mxraft.headless" -}}
{{- printf "%s-headless" (include "mxraft.fullname" .) }}
{{- end }}

{{/* The DNS suffix of the pods: <headless>.<namespace>.svc.<cluster domain>. */}}
{{- define "mxraft.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "mxraft.headless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "mxraft.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "mxraft.caSecret" -}}
{{- if eq .Values.tls.ca.source "existing" }}
{{- required "tls.ca.existingSecret is required when tls.ca.source is \"existing\"" .Values.tls.ca.existingSecret }}
{{- else }}
{{- printf "%s-ca" (include "mxraft.fullname" .) }}
{{- end }}
{{- end }}

{{/* The keys of the CA Secret: what the chart or cert-manager writes, or what the user names. */}}
{{- define "mxraft.caCertKey" -}}
{{- if eq .Values.tls.ca.source "cert-manager" }}tls.crt{{ else if eq .Values.tls.ca.source "generate" }}ca.pem{{ else }}{{ .Values.tls.ca.certKey }}{{ end }}
{{- end }}
{{- define "mxraft.caKeyKey" -}}
{{- if eq .Values.tls.ca.source "cert-manager" }}tls.key{{ else if eq .Values.tls.ca.source "generate" }}ca-key.pem{{ else }}{{ .Values.tls.ca.keyKey }}{{ end }}
{{- end }}

{{- define "mxraft.tokenSecret" -}}
{{- default (printf "%s-tokens" (include "mxraft.fullname" .)) .Values.admin.existingTokenSecret }}
{{- end }}

{{/* One TOML value: strings, numbers and booleans as JSON writes them (valid TOML), lists too. */}}
{{- define "mxraft.toml" -}}
{{- toJson . }}
{{- end }}

{{/* key = value lines of a map of section keys, in key order, skipping `skip`. */}}
{{- define "mxraft.tomlKeys" -}}
{{- $skip := .skip | default list }}
{{- range $k, $v := .values }}
{{- if not (has $k $skip) }}
{{ $k }} = {{ include "mxraft.toml" $v }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The node configuration (mxraftd.toml), one file for every pod: mxraftd takes the node id from
the pod's name (node.id_from_hostname) and expands ${POD_NAME}. With forChecksum, the peer list
is left out: only a pristine node reads it, so scaling does not restart the running pods.
*/}}
{{- define "mxraft.config" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $domain := include "mxraft.podDomain" $root }}
{{- $podName := printf "${POD_NAME}.%s" $domain -}}
# mxraftd configuration rendered by the mxraft chart; ${POD_NAME} is the pod's name.
[node]
id_from_hostname = true
data_dir = "/var/lib/mxraft"

[smtp]
listen = "0.0.0.0:{{ $v.smtp.containerPort }}"
advertise = "{{ $podName }}:{{ $v.smtp.containerPort }}"
hostname = {{ include "mxraft.toml" (required "mxHostname is required: the name the MX records point at" $v.mxHostname) }}
{{- if not (hasKey $v.config.smtp "shutdown_grace") }}
shutdown_grace = "{{ max 5 (sub (int $v.terminationGracePeriodSeconds) 10) }}s"
{{- end }}
{{- if $v.smtp.tlsSecret }}
tls_cert_file = "/etc/mxraft/smtp-tls/tls.crt"
tls_key_file = "/etc/mxraft/smtp-tls/tls.key"
{{- end }}
{{- include "mxraft.tomlKeys" (dict "values" $v.config.smtp "skip" (list "shutdown_grace")) }}
{{- if hasKey $v.config.smtp "shutdown_grace" }}
shutdown_grace = {{ include "mxraft.toml" $v.config.smtp.shutdown_grace }}
{{- end }}

[tls]
ca_file = "/etc/mxraft/ca/ca.pem"
cert_file = "/etc/mxraft/tls/node.pem"
key_file = "/etc/mxraft/tls/node-key.pem"

[admin]
listen = "0.0.0.0:{{ $v.admin.containerPort }}"
advertise = "{{ $podName }}:{{ $v.admin.containerPort }}"
token_files = [
    { path = "/etc/mxraft/tokens/admin", role = "admin" },
    { path = "/etc/mxraft/tokens/read", role = "read" },
]

[cluster]
listen = "0.0.0.0:{{ $v.cluster.containerPort }}"
advertise = "{{ $podName }}:{{ $v.cluster.containerPort }}"
# Pod 0 creates the cluster, once every other pod has answered that none exists.
bootstrap_id = 1
{{- if not .forChecksum }}
peers = [
{{- range $i := until (int $v.replicas) }}
    "{{ include "mxraft.fullname" $root }}-{{ $i }}.{{ $domain }}:{{ $v.cluster.containerPort }}",
{{- end }}
]
{{- end }}
{{- include "mxraft.tomlKeys" (dict "values" $v.config.cluster) }}

[metrics]
listen = "0.0.0.0:{{ $v.metrics.containerPort }}"
{{- range $section := list "log" "delivery" "queue" "verify" "greylist" }}
{{- $keys := index $v.config $section }}
{{- if $keys }}

[{{ $section }}]
{{- include "mxraft.tomlKeys" (dict "values" $keys) }}
{{- end }}
{{- end }}
{{- range $v.config.domains }}

[[domains]]
{{- include "mxraft.tomlKeys" (dict "values" .) }}
{{- end }}
{{- range $v.config.routes }}

[[routes]]
{{- include "mxraft.tomlKeys" (dict "values" .) }}
{{- end }}
{{ end }}
