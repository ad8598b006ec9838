{{/*
Checks the values cannot express in values.schema.json, each failing with a message that
names the value. Included by the ConfigMap, so every render runs them.
*/}}
{{- define "mxraft.validate" -}}
{{- $v := .Values }}
{{- if not $v.config.domains }}
{{- fail "config.domains is empty: list at least one protected domain, e.g. --set 'config.domains[0].name=example.com' --set 'config.domains[0].primary=mail.example.com:25'" }}
{{- end }}
{{- range $i, $d := $v.config.domains }}
{{- $has := 0 }}
{{- if $d.primary }}{{ $has = add1 $has }}{{ end }}
{{- if hasKey $d "mx_preference" }}{{ $has = add1 $has }}{{ end }}
{{- if ne (int $has) 1 }}
{{- fail (printf "config.domains[%d] (%s) needs exactly one way to its primary: primary (host:port, where queued mail goes) or mx_preference (this cluster's MX preference; mail goes to the better MX hosts)" $i $d.name) }}
{{- end }}
{{- end }}
{{- $managed := dict "smtp" (list "listen" "advertise" "hostname" "tls_cert_file" "tls_key_file" "tls_listen") "cluster" (list "listen" "advertise" "bootstrap" "bootstrap_id" "peers" "join" "insecure_plaintext") }}
{{- range $section, $keys := $managed }}
{{- range $key := $keys }}
{{- if hasKey (index $v.config $section) $key }}
{{- fail (printf "config.%s.%s is set by the chart (from the pod's name and the chart's ports and Secrets); remove it" $section $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor scrapes that Service" }}
{{- end }}
{{- end }}
