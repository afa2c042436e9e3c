{{/* Names and labels. */}}
{{- define "esmd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "esmd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "esmd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "esmd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "esmd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "esmd.labels" -}}
helm.sh/chart: {{ include "esmd.chart" . }}
{{ include "esmd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "esmd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "esmd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "esmd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The esmd config file as YAML text: `config` is a map (values) or a whole file (--set-file). */}}
{{- define "esmd.configYaml" -}}
{{- if kindIs "string" .Values.config }}
{{- .Values.config }}
{{- else }}
{{- toYaml (.Values.config | default dict) }}
{{- end }}
{{- end }}

{{/* server.shutdown_grace_seconds of the config, esmd's default 30 when absent. */}}
{{- define "esmd.shutdownGrace" -}}
{{- $cfg := include "esmd.configYaml" . | fromYaml | default dict }}
{{- dig "server" "shutdown_grace_seconds" 30 $cfg | float64 | ceil | int }}
{{- end }}

{{/* Long enough for esmd to drain in-flight batches and commit after SIGTERM. */}}
{{- define "esmd.terminationGracePeriodSeconds" -}}
{{- $grace := include "esmd.shutdownGrace" . | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $grace 30 }}
{{- else }}
{{- $given := .Values.terminationGracePeriodSeconds | int }}
{{- if le $given $grace }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.server.shutdown_grace_seconds (%d), or in-flight batches are killed mid-drain" $given $grace) }}
{{- end }}
{{- $given }}
{{- end }}
{{- end }}

{{/* Refuse a config the pod could not serve: esmd must listen on 0.0.0.0:<service.port>. */}}
{{- define "esmd.checkConfig" -}}
{{- $cfg := include "esmd.configYaml" . | fromYaml | default dict }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "config is not valid YAML: %s" (get $cfg "Error")) }}
{{- end }}
{{- $want := printf "0.0.0.0:%d" (.Values.service.port | int) }}
{{- $listen := dig "server" "listen" "127.0.0.1:9464" $cfg }}
{{- if ne $listen $want }}
{{- fail (printf "config.server.listen is %q: set it to %q, so that the probes and Prometheus reach esmd" $listen $want) }}
{{- end }}
{{- end }}

{{/* A literal value for a secret-looking variable is refused: secrets come from Secrets. */}}
{{- define "esmd.checkEnv" -}}
{{- range .Values.env }}
{{- if and (hasKey . "value") (regexMatch "(?i)(secret|password|passwd|token|credential|private|api_?key|access_?key)" .name) }}
{{- fail (printf "env %s has a literal value; take it from an existing Secret with secretEnv or envFromSecrets" .name) }}
{{- end }}
{{- end }}
{{- end }}
