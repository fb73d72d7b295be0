{{/*
Chart name, overridable with .Values.nameOverride.
*/}}
{{- define "garden-artifacts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name used as the prefix of every resource: .Values.fullnameOverride, else the release
name when it already contains the chart name, else <release>-<chart>. 63 characters at most.
*/}}
{{- define "garden-artifacts.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "garden-artifacts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the controller pods (never change these on upgrade).
*/}}
{{- define "garden-artifacts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "garden-artifacts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "garden-artifacts.labels" -}}
helm.sh/chart: {{ include "garden-artifacts.chart" . }}
{{ include "garden-artifacts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: garden-artifacts
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the ServiceAccount the controller runs as.
*/}}
{{- define "garden-artifacts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "garden-artifacts.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Controller image reference.
*/}}
{{- define "garden-artifacts.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
A non-negative integer flag value, printed as digits: YAML numbers from a values file reach
the template as float64, which would print large ones as 2.147483648e+10. Fails on anything
else. Argument: list of the value's name and the value.
*/}}
{{- define "garden-artifacts.uint" -}}
{{- $name := index . 0 }}
{{- $v := index . 1 }}
{{- if kindIs "float64" $v }}
{{- if or (lt $v 0.0) (ne $v (floor $v)) }}
{{- fail (printf "%s must be a non-negative integer, got %v" $name $v) }}
{{- end }}
{{- int64 $v }}
{{- else if regexMatch "^[0-9]+$" (toString $v) }}
{{- toString $v }}
{{- else }}
{{- fail (printf "%s must be a non-negative integer, got %v" $name $v) }}
{{- end }}
{{- end }}

{{/*
A non-negative number flag value (fractions allowed), as the controller parses it. Fails on
anything else. Argument: list of the value's name and the value.
*/}}
{{- define "garden-artifacts.number" -}}
{{- $name := index . 0 }}
{{- $v := toString (index . 1) }}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]*)?([eE][-+]?[0-9]+)?$" $v) }}
{{- fail (printf "%s must be a non-negative number, got %s" $name $v) }}
{{- end }}
{{- $v }}
{{- end }}

{{/*
Whether an optional value is set: neither null nor "". (0 is set.)
*/}}
{{- define "garden-artifacts.isSet" -}}
{{- if and (not (kindIs "invalid" .)) (ne (toString .) "") }}true{{ end }}
{{- end }}

{{/*
Where the registry CA bundle (registryCA) is mounted.
*/}}
{{- define "garden-artifacts.registryCADir" -}}
/etc/garden-artifacts/registry-ca
{{- end }}

{{/*
The CA file the controller reads (--ca-file), inside that directory; empty when registryCA
names neither a Secret nor a ConfigMap. Fails when it names both, or on a bad key.
*/}}
{{- define "garden-artifacts.registryCAFile" -}}
{{- $ca := .Values.registryCA | default dict }}
{{- if and $ca.secretName $ca.configMapName }}
{{- fail "registryCA: set secretName or configMapName, not both" }}
{{- end }}
{{- if or $ca.secretName $ca.configMapName }}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+$" (toString $ca.key)) }}
{{- fail (printf "registryCA.key must be the key (a file name) holding the PEM bundle, e.g. ca.crt; got %q" (toString $ca.key)) }}
{{- end }}
{{- printf "%s/%s" (include "garden-artifacts.registryCADir" .) $ca.key }}
{{- end }}
{{- end }}

{{/*
The shards as a JSON list of {name, selector}: .Values.shards, checked (a DNS-label name, unique,
a selector), or one unnamed shard of every object when none are listed.
*/}}
{{- define "garden-artifacts.shards" -}}
{{- $shards := list }}
{{- $seen := dict }}
{{- range .Values.shards }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?$" (toString .name)) }}
{{- fail (printf "shards: name %q must be a DNS label of at most 22 characters" (toString .name)) }}
{{- end }}
{{- if hasKey $seen .name }}
{{- fail (printf "shards: name %q is listed twice" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- if not .selector }}
{{- fail (printf "shards: %q has no selector (a shard of every object would overlap the others)" .name) }}
{{- end }}
{{- $shards = append $shards (dict "name" .name "selector" .selector) }}
{{- else }}
{{- $shards = list (dict "name" "" "selector" "") }}
{{- end }}
{{- toJson $shards }}
{{- end }}

{{/*
A shard's Deployment name: the full name, then the shard's. Argument: list of the root
context and the shard.
*/}}
{{- define "garden-artifacts.shardName" -}}
{{- $root := index . 0 }}
{{- $shard := index . 1 }}
{{- if $shard.name }}
{{- printf "%s-%s" (include "garden-artifacts.fullname" $root | trunc 40 | trimSuffix "-") $shard.name }}
{{- else }}
{{- include "garden-artifacts.fullname" $root }}
{{- end }}
{{- end }}

