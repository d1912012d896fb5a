{{/*
The chart name, or nameOverride.
*/}}
{{- define "tokensvc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every resource: fullnameOverride, else <release>-<name>, else just the
release name when it already contains the chart name. Truncated to 63 characters, the
limit of a DNS label.
*/}}
{{- define "tokensvc.fullname" -}}
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

{{- define "tokensvc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The recommended app.kubernetes.io labels on every object.
*/}}
{{- define "tokensvc.labels" -}}
helm.sh/chart: {{ include "tokensvc.chart" . }}
{{ include "tokensvc.selectorLabels" . }}
app.kubernetes.io/version: {{ include "tokensvc.version" . | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: tokensvc
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: stable across upgrades, so never the version.
*/}}
{{- define "tokensvc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokensvc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The version label: the image tag when set, else the chart's appVersion. A digest-only
reference keeps appVersion; a label value cannot hold "sha256:".
*/}}
{{- define "tokensvc.version" -}}
{{- default .Chart.AppVersion .Values.image.tag | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokensvc.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "tokensvc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokensvc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The name of the container and Service port: https when the pod serves TLS.
*/}}
{{- define "tokensvc.portName" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "tokensvc.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
Whether the pod logs in to Vault with its ServiceAccount token.
*/}}
{{- define "tokensvc.vaultKubernetesAuth" -}}
{{- if and (eq .Values.store "vault") (eq .Values.vault.auth.method "kubernetes") }}true{{ end }}
{{- end }}

{{/*
Whether the Kubernetes auth uses a projected, audience-bound token instead of the
automounted API token.
*/}}
{{- define "tokensvc.projectedVaultToken" -}}
{{- if and (include "tokensvc.vaultKubernetesAuth" .) .Values.vault.auth.kubernetes.tokenAudience }}true{{ end }}
{{- end }}

{{/*
The port of vault.address: explicit, else the scheme's default.
*/}}
{{- define "tokensvc.vaultPort" -}}
{{- $u := urlParse .Values.vault.address }}
{{- $port := regexFind ":[0-9]+$" $u.host | trimPrefix ":" }}
{{- if $port }}{{ $port }}{{ else if eq $u.scheme "https" }}443{{ else }}80{{ end }}
{{- end }}

{{/*
The replay store's port, from replayStore.url (6379 when it names none).
*/}}
{{- define "tokensvc.replayStorePort" -}}
{{- $u := urlParse .Values.replayStore.url }}
{{- $port := regexFind ":[0-9]+$" $u.host | trimPrefix ":" }}
{{- if $port }}{{ $port }}{{ else }}6379{{ end }}
{{- end }}

{{/*
The Vault policy tokensvc needs with these values: deploy/vault/tokensvc.hcl with the
configured mounts and prefix, Transit paths only when vault.transit.enabled.
*/}}
{{- define "tokensvc.vaultPolicy" -}}
{{- $kv := .Values.vault.kv.mount }}
{{- $prefix := .Values.vault.prefix }}
path "{{ $kv }}/data/{{ $prefix }}/*" {
  capabilities = ["create", "read", "update"]
}
path "{{ $kv }}/metadata/{{ $prefix }}/*" {
  capabilities = ["read", "list", "delete"]
}
path "{{ $kv }}/destroy/{{ $prefix }}/*" {
  capabilities = ["update"]
}
{{- if .Values.vault.transit.enabled }}
{{- $tm := .Values.vault.transit.mount }}
{{- $keys := replace "/" "." $prefix }}
path "{{ $tm }}/wrapping_key" {
  capabilities = ["read"]
}
path "{{ $tm }}/keys/{{ $keys }}-*" {
  capabilities = ["create", "update", "delete"]
}
path "{{ $tm }}/hmac/{{ $keys }}-*" {
  capabilities = ["update"]
}
{{- end }}
{{- if or .Values.vault.transit.enabled .Values.config.issuer.url }}
{{- $tm := .Values.vault.transit.mount }}
{{- $keys := replace "/" "." $prefix }}
path "{{ $tm }}/keys/{{ $keys }}-i-*" {
  capabilities = ["update", "read"]
}
path "{{ $tm }}/sign/{{ $keys }}-i-*" {
  capabilities = ["update"]
}
{{- end }}
{{- $pki := .Values.vault.pki.mount }}
path "{{ $pki }}/sign/tokensvc-*" {
  capabilities = ["update"]
}
path "{{ $pki }}/roles/tokensvc-*" {
  capabilities = ["read"]
}
path "{{ $pki }}/issuer/+/json" {
  capabilities = ["read"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
{{- end }}

{{/*
Cross-field checks JSON Schema cannot express (the schema holds all the others). The
Deployment, which every install renders, includes it, so a bad combination fails the
whole render with one clear message.
*/}}
{{- define "tokensvc.validate" -}}
{{- $drain := int .Values.config.shutdownTimeoutSeconds }}
{{- $sleep := int .Values.lifecycle.preStopSleepSeconds }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if le $grace (add $drain $sleep) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed lifecycle.preStopSleepSeconds + config.shutdownTimeoutSeconds (%d + %d = %d): otherwise Kubernetes kills pods before in-flight requests have drained" $grace $sleep $drain (add $drain $sleep)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}
