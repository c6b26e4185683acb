{{/*
The chart name, or nameOverride.
*/}}
{{- define "p2p-sensor-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every object: fullnameOverride, or <release>-<name>, or the release name
when it already contains the name. Truncated to 63 characters (DNS label).
*/}}
{{- define "p2p-sensor-operator.fullname" -}}
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
<chart name>-<chart version>, for the helm.sh/chart label.
*/}}
{{- define "p2p-sensor-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of this release, without the component.
*/}}
{{- define "p2p-sensor-operator.commonLabels" -}}
helm.sh/chart: {{ include "p2p-sensor-operator.chart" . }}
app.kubernetes.io/name: {{ include "p2p-sensor-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: p2p-sensor-operator
{{- end }}

{{/*
Labels of the operator's objects (everything but the test Pod).
*/}}
{{- define "p2p-sensor-operator.labels" -}}
{{ include "p2p-sensor-operator.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Selector labels: the operator's pods, selected by the Deployment, the Service and the
NetworkPolicy. The test Pod has component=test, so the Service never selects it.
*/}}
{{- define "p2p-sensor-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "p2p-sensor-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The ServiceAccount's name.
*/}}
{{- define "p2p-sensor-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "p2p-sensor-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's image: repository:tag, the tag defaulting to appVersion.
*/}}
{{- define "p2p-sensor-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The default sensor image (--sensor-image).
*/}}
{{- define "p2p-sensor-operator.sensorImage" -}}
{{- printf "%s:%s" .Values.sensorImage.repository (default .Chart.AppVersion .Values.sensorImage.tag) }}
{{- end }}

{{/*
The collector URL that sensor pods push reports to (--collector-endpoint).
*/}}
{{- define "p2p-sensor-operator.collectorEndpoint" -}}
{{- if .Values.operator.collectorEndpoint }}
{{- .Values.operator.collectorEndpoint }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "p2p-sensor-operator.fullname" .) .Release.Namespace (int .Values.ports.collector) }}
{{- end }}
{{- end }}

{{/*
The leader-election Lease name (--lease-name).
*/}}
{{- define "p2p-sensor-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "p2p-sensor-operator.fullname" .)) .Values.leaderElection.leaseName | trunc 63 | trimSuffix "-" }}
{{- end }}
