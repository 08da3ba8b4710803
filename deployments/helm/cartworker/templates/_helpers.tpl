{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "cartworker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of every object: the release name, with the chart name appended unless
the release name already contains it (release "cartworker" gives
"cartworker", as in the plain manifests).
*/}}
{{- define "cartworker.fullname" -}}
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

{{/*
Labels the Deployment selects its pods by; never change them on an
installed release (a Deployment's selector is immutable).
*/}}
{{- define "cartworker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cartworker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "cartworker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cartworker.selectorLabels" . }}
app.kubernetes.io/component: worker
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the Dapr Configuration the sidecar uses: the chart's own when
tracing is on, else dapr.config (may be empty).
*/}}
{{- define "cartworker.daprConfig" -}}
{{- if .Values.tracing.enabled }}
{{- include "cartworker.fullname" . }}
{{- else }}
{{- .Values.dapr.config }}
{{- end }}
{{- end }}

{{/*
WORKER_PARTITIONS as the worker will read it; fails when it is not set,
since KEDA's maximum and the stream's transform follow it.
*/}}
{{- define "cartworker.partitions" -}}
{{- $p := get .Values.config "WORKER_PARTITIONS" | toString }}
{{- if or (eq $p "") (eq $p "<nil>") }}
{{- fail "config.WORKER_PARTITIONS must be set: KEDA's maxReplicaCount follows it" }}
{{- end }}
{{- $p }}
{{- end }}

{{/*
Checks on the values that a schema cannot express. Included by the
Deployment, so that every render runs them.
*/}}
{{- define "cartworker.validate" -}}
{{- $reserved := dict
  "WORKER_HTTP_ADDR" "httpPort"
  "DAPR_HTTP_ENDPOINT" "dapr (the sidecar's HTTP API is always on 127.0.0.1:3500)"
  "DAPR_GRPC_ENDPOINT" "dapr.grpcPort"
  "DAPR_API_TOKEN" "dapr.apiTokenSecret"
  "CART_STATE_STORE" "dapr.stateStore.name"
  "NATS_CREDS" "natsCreds.existingSecret"
  "NATS_NKEY_SEED" "natsNkey.existingSecret"
  "NATS_TLS_CA" "natsTLS.existingSecret"
  "NATS_TLS_CERT" "natsTLS.existingSecret and natsTLS.clientCert"
  "NATS_TLS_KEY" "natsTLS.existingSecret and natsTLS.clientCert"
}}
{{- range $name, $value := .Values.config }}
{{- if hasKey $reserved $name }}
{{- fail (printf "config.%s is set by the chart: use %s" $name (get $reserved $name)) }}
{{- end }}
{{- if regexMatch "(?i)(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY)" $name }}
{{- fail (printf "config.%s would put a secret in the values: read it from a Secret with secretEnv.%s" $name $name) }}
{{- end }}
{{- if hasKey $.Values.secretEnv $name }}
{{- fail (printf "%s is in both config and secretEnv" $name) }}
{{- end }}
{{- if not (regexMatch "^[A-Z][A-Z0-9_]*$" $name) }}
{{- fail (printf "config.%s: not an environment variable name" $name) }}
{{- end }}
{{- end }}
{{- range $name, $ref := .Values.secretEnv }}
{{- if hasKey $reserved $name }}
{{- fail (printf "secretEnv.%s is set by the chart: use %s" $name (get $reserved $name)) }}
{{- end }}
{{- if or (not $ref.secretName) (not $ref.key) }}
{{- fail (printf "secretEnv.%s needs secretName and key" $name) }}
{{- end }}
{{- end }}
{{- include "cartworker.validateNATS" . }}
{{- if not .Values.dapr.apiTokenSecret }}
{{- fail "dapr.apiTokenSecret is required: a Secret with key \"token\" that daprd enforces and the worker sends" }}
{{- end }}
{{- if and .Values.tracing.enabled .Values.dapr.config }}
{{- fail "dapr.config and tracing.enabled both name the sidecar's Configuration: set one" }}
{{- end }}
{{- if not (has .Values.tracing.exporter (list "otel" "zipkin")) }}
{{- fail (printf "tracing.exporter %q: otel or zipkin" .Values.tracing.exporter) }}
{{- end }}
{{- range $k, $_ := .Values.dapr.extraAnnotations }}
{{- if not (hasPrefix "dapr.io/" $k) }}
{{- fail (printf "dapr.extraAnnotations.%s: only dapr.io/ annotations (podAnnotations takes the others)" $k) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks of the NATS settings. The worker refuses to start with more than one
way to authenticate (and names them), which on Kubernetes shows only as a
crash loop; the chart says it first, naming the values. A secretEnv entry
counts even when optional: its Secret may exist.
*/}}
{{- define "cartworker.validateNATS" -}}
{{- $where := dict }}
{{- range $name, $_ := .Values.config }}{{ $_ := set $where $name (printf "config.%s" $name) }}{{ end }}
{{- range $name, $_ := .Values.secretEnv }}{{ $_ := set $where $name (printf "secretEnv.%s" $name) }}{{ end }}
{{- range .Values.extraEnv }}{{ $_ := set $where .name (printf "extraEnv %s" .name) }}{{ end }}
{{- $ways := list }}
{{- $userPass := list }}
{{- range $name := list "NATS_USER" "NATS_PASSWORD" }}
{{- if hasKey $where $name }}{{ $userPass = append $userPass (get $where $name) }}{{ end }}
{{- end }}
{{- if $userPass }}{{ $ways = append $ways (printf "user/password (%s)" (join ", " $userPass)) }}{{ end }}
{{- if hasKey $where "NATS_TOKEN" }}{{ $ways = append $ways (printf "token (%s)" (get $where "NATS_TOKEN")) }}{{ end }}
{{- if .Values.natsCreds.existingSecret }}{{ $ways = append $ways "creds file (natsCreds.existingSecret)" }}{{ end }}
{{- if .Values.natsNkey.existingSecret }}{{ $ways = append $ways "nkey (natsNkey.existingSecret)" }}{{ end }}
{{- if gt (len $ways) 1 }}
{{- fail (printf "NATS authentication is set %d ways, and the worker takes one: %s; keep one and set the others to null or empty" (len $ways) (join " and " $ways)) }}
{{- end }}
{{- with .Values.natsTLS }}
{{- if and .clientCert (not .existingSecret) }}
{{- fail "natsTLS.clientCert needs natsTLS.existingSecret, the Secret holding the client certificate" }}
{{- end }}
{{- if and .existingSecret (not .keys.ca) (not .clientCert) }}
{{- fail "natsTLS.existingSecret is set but nothing is read from it: set natsTLS.keys.ca (the CA bundle) or natsTLS.clientCert" }}
{{- end }}
{{- end }}
{{- end }}
