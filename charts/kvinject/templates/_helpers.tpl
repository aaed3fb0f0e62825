{{/* The prefix of every object's name: the release name, with the chart's name when the release's lacks it. */}}
{{- define "kvinject.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kvinject.webhookName" -}}{{ include "kvinject.fullname" . }}-webhook{{- end -}}
{{- define "kvinject.cacheName" -}}{{ include "kvinject.fullname" . }}-cache{{- end -}}
{{- define "kvinject.webhookCertSecret" -}}
{{- if eq .Values.certificates.source "secret" -}}{{ .Values.certificates.secret.name }}{{- else -}}{{ include "kvinject.fullname" . }}-webhook-cert{{- end -}}
{{- end -}}
{{- define "kvinject.cacheCertSecret" -}}
{{- if eq .Values.certificates.source "secret" -}}{{ .Values.certificates.secret.cacheName }}{{- else -}}{{ include "kvinject.fullname" . }}-cache-cert{{- end -}}
{{- end -}}

{{/* Selector labels of a component (webhook, cache): also the pod template's labels. */}}
{{- define "kvinject.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object: the kustomize directories' three, and Helm's. */}}
{{- define "kvinject.labels" -}}
{{ include "kvinject.selectorLabels" . }}
app.kubernetes.io/part-of: kvinject
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The context with a component, for the label templates: (dict "ctx" $ "component" "webhook"). */}}
{{- define "kvinject.componentLabels" -}}
{{ include "kvinject.labels" (merge (dict "component" .component) .ctx) }}
{{- end -}}

{{/* An image reference from {registry, repository, tag, digest}, each part empty taken from the second. */}}
{{- define "kvinject.imageRef" -}}
{{- $own := index . 0 -}}{{- $base := index . 1 -}}{{- $appVersion := index . 2 -}}
{{- $registry := $own.registry | default $base.registry -}}
{{- $repository := $own.repository | default $base.repository -}}
{{- $tag := $own.tag | default $base.tag | default $appVersion -}}
{{- $digest := $own.digest | default $base.digest -}}
{{- if $registry }}{{ $registry }}/{{ end }}{{ $repository }}{{ if $tag }}:{{ $tag }}{{ end }}{{ if $digest }}@{{ $digest }}{{ end }}
{{- end -}}

{{- define "kvinject.image" -}}
{{ include "kvinject.imageRef" (list .Values.image .Values.image .Chart.AppVersion) }}
{{- end -}}

{{- define "kvinject.agentImage" -}}
{{ include "kvinject.imageRef" (list .Values.agent.image .Values.image .Chart.AppVersion) }}
{{- end -}}

{{/* The namespace allowed to scrape /metrics. */}}
{{- define "kvinject.metricsNamespace" -}}
{{- if .Values.networkPolicy.metricsNamespace -}}{{ .Values.networkPolicy.metricsNamespace }}
{{- else if eq .Values.certificates.source "openshift" -}}openshift-monitoring
{{- else -}}monitoring{{- end -}}
{{- end -}}

{{/* The cache's URL, the webhook's --cache-url. */}}
{{- define "kvinject.cacheURL" -}}
https://{{ include "kvinject.cacheName" . }}.{{ .Release.Namespace }}.svc.{{ .Values.config.clusterDomain }}.
{{- end -}}

{{/* The webhook's --cache-ca-file for the certificate source. */}}
{{- define "kvinject.cacheCAFile" -}}
{{- if eq .Values.certificates.source "openshift" -}}/var/run/kvinject/cache-ca/service-ca.crt
{{- else if eq .Values.certificates.source "secret" -}}/var/run/kvinject/cache-ca/ca.crt
{{- else -}}/var/run/kvinject/serving-certs/ca.crt{{- end -}}
{{- end -}}

{{/* Fails the render when values that the schema cannot relate contradict each other. */}}
{{- define "kvinject.validate" -}}
{{- $c := .Values.certificates -}}
{{- if eq $c.source "secret" -}}
{{- if not $c.secret.name -}}{{ fail "certificates.source is secret: set certificates.secret.name to the webhook's Secret (tls.crt, tls.key)" }}{{- end -}}
{{- if not $c.secret.caBundle -}}{{ fail "certificates.source is secret: set certificates.secret.caBundle to the PEM of the CA that signs it" }}{{- end -}}
{{- if and .Values.cache.enabled (not $c.secret.cacheName) -}}{{ fail "cache.enabled with certificates.source secret: set certificates.secret.cacheName to the cache's Secret (tls.crt, tls.key)" }}{{- end -}}
{{- end -}}
{{- if and .Values.cache.byDefault (not .Values.cache.enabled) -}}{{ fail "cache.byDefault needs cache.enabled: there is no cache to use" }}{{- end -}}
{{- with .Values.serviceMonitor.prometheusServiceAccount -}}
{{- if and (or .name .namespace) (not (and .name .namespace)) -}}{{ fail "serviceMonitor.prometheusServiceAccount needs both name and namespace" }}{{- end -}}
{{- end -}}
{{- end -}}
