{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name (63 characters at most, the DNS label limit).
The release name alone if it already contains the chart name
(release "tollgate" -> "tollgate"), else "<release>-<chart>".
*/}}
{{- define "tollgate.fullname" -}}
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
Name of the controller's Deployment, Service, ClusterRole(Binding) and PDB:
"<fullname>-controller" (tollgate-controller for a release named tollgate).
*/}}
{{- define "tollgate.controllerName" -}}
{{- printf "%s-controller" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the metrics Service: "<fullname>-controller-metrics".
*/}}
{{- define "tollgate.metricsServiceName" -}}
{{- printf "%s-metrics" (include "tollgate.controllerName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
URL gateway pods use to reach the configuration server (--controller-url):
configServer.url, else the controller's Service in the release namespace,
https://<fullname>-controller.<namespace>.svc:<configServer.port>.
*/}}
{{- define "tollgate.controllerURL" -}}
{{- if .Values.configServer.url }}
{{- .Values.configServer.url }}
{{- else }}
{{- printf "https://%s.%s.svc:%d" (include "tollgate.controllerName" .) .Release.Namespace (int .Values.configServer.port) }}
{{- end }}
{{- end }}

{{/*
Secret holding the configuration server's CA and certificate (--tls-secret):
configServer.tlsSecretName, else "<fullname>-controller-tls".
*/}}
{{- define "tollgate.tlsSecretName" -}}
{{- if .Values.configServer.tlsSecretName }}
{{- .Values.configServer.tlsSecretName }}
{{- else }}
{{- printf "%s-tls" (include "tollgate.controllerName" .) | trunc 253 }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the controller pods. Never change these on upgrade: a
Deployment's selector is immutable.
*/}}
{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "tollgate.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: tollgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollgate.controllerName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tollgate.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
Controller image reference: repository@digest, else repository:tag.
*/}}
{{- define "tollgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "tollgate.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Gateway image reference (--gateway-image), defaulting field by field to the
controller image.
*/}}
{{- define "tollgate.gatewayImage" -}}
{{- $repo := .Values.gatewayImage.repository | default .Values.image.repository }}
{{- if .Values.gatewayImage.digest }}
{{- printf "%s@%s" $repo .Values.gatewayImage.digest }}
{{- else if and (not .Values.gatewayImage.repository) (not .Values.gatewayImage.tag) .Values.image.digest }}
{{- include "tollgate.image" . }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.gatewayImage.tag | default (include "tollgate.imageTag" .)) }}
{{- end }}
{{- end }}
