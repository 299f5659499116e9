{{/* Chart name, truncated for Kubernetes names. */}}
{{- define "edge-cloud.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of one daemon's Deployment and Service: <chart>-<daemon> (edge-cloud-ccrm), the
address other daemons' values use; one release per namespace. */}}
{{- define "edge-cloud.daemonName" -}}
{{- printf "%s-%s" .root.Chart.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels common to every object. */}}
{{- define "edge-cloud.labels" -}}
app.kubernetes.io/name: {{ include "edge-cloud.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{ include "edge-cloud.selectorLabels" . }}
{{- end -}}

{{/* Selector labels of one daemon. */}}
{{- define "edge-cloud.selectorLabels" -}}
app.kubernetes.io/part-of: {{ include "edge-cloud.name" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* Image reference. */}}
{{- define "edge-cloud.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
