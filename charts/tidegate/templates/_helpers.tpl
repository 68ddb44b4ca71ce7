{{/* The chart name (nameOverride wins). */}}
{{- define "tidegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects: RELEASE-tidegate, or RELEASE when it holds the name. */}}
{{- define "tidegate.fullname" -}}
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

{{- define "tidegate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "tidegate.labels" -}}
helm.sh/chart: {{ include "tidegate.chart" . }}
{{ include "tidegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the controller's pods. */}}
{{- define "tidegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tidegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tidegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tidegate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* NAMESPACE/NAME of the Service whose addresses go to Ingress status ("" for none). */}}
{{- define "tidegate.publishService" -}}
{{- if .Values.controller.publishService.enabled }}
{{- if .Values.controller.publishService.pathOverride }}
{{- .Values.controller.publishService.pathOverride }}
{{- else if .Values.service.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "tidegate.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Seconds a terminating pod gets: longer than the shutdown delay and the drain together. */}}
{{- define "tidegate.terminationGracePeriodSeconds" -}}
{{- $needed := add .Values.controller.shutdownDelaySeconds .Values.controller.drainTimeoutSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be larger than controller.shutdownDelaySeconds + controller.drainTimeoutSeconds (%v), or the kubelet kills Tidegate before it has drained" .Values.terminationGracePeriodSeconds $needed) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The arguments of `tidegate run`: one flag per controller value. */}}
{{- define "tidegate.args" -}}
{{- $c := .Values.controller -}}
- run
- --http-addr=0.0.0.0:{{ .Values.containerPorts.http }}
{{- /* Clients reach the pods through the Service's port: redirects point there. */}}
- --http-public-port={{ default .Values.service.ports.http $c.httpPublicPort }}
{{- if .Values.service.enableHttps }}
- --https-addr=0.0.0.0:{{ .Values.containerPorts.https }}
- --https-public-port={{ default .Values.service.ports.https $c.httpsPublicPort }}
{{- else }}
- --https-addr=off
{{- end }}
{{- with $c.defaultCertificate }}
- --default-certificate={{ . }}
{{- end }}
- --admin-addr=0.0.0.0:{{ .Values.containerPorts.admin }}
- --ingress-class={{ .Values.ingressClass.name }}
- --controller-name={{ $c.controllerName }}
{{- with $c.watchIngressClasses }}
- --watch-ingress-class={{ join "," . }}
{{- end }}
{{- with $c.watchNamespace }}
- --namespace={{ . }}
{{- end }}
- --leader-elect={{ $c.leaderElection.enabled }}
{{- if $c.leaderElection.enabled }}
- --election-id={{ $c.leaderElection.electionId }}
{{- end }}
{{- with include "tidegate.publishService" . }}
- --publish-service={{ . }}
{{- end }}
{{- with $c.publishAddresses }}
- --publish-address={{ join "," . }}
{{- end }}
- --log-format={{ $c.logFormat }}
- --log-level={{ $c.logLevel }}
- --access-log={{ $c.accessLog }}
{{- if $c.accessLogIncludeQuery }}
- --access-log-include-query
{{- end }}
- --shutdown-delay={{ $c.shutdownDelaySeconds }}s
- --debounce={{ $c.debounce }}
- --drain-timeout={{ $c.drainTimeoutSeconds }}s
- --header-read-timeout={{ $c.headerReadTimeout }}
- --body-read-timeout={{ $c.bodyReadTimeout }}
- --idle-timeout={{ $c.idleTimeout }}
- --max-header-bytes={{ int64 $c.maxHeaderBytes }}
- --connect-timeout={{ $c.connectTimeout }}
- --default-request-timeout={{ $c.defaultRequestTimeout }}
- --upstream-idle-timeout={{ $c.upstreamIdleTimeout }}
{{- if not (kindIs "invalid" $c.workerThreads) }}
- --worker-threads={{ int64 $c.workerThreads }}
{{- end }}
- --http1-codec={{ $c.http1Codec }}
{{- with $c.trustedProxies }}
- --trusted-proxies={{ join "," . }}
{{- end }}
{{- with $c.proxyProtocolFrom }}
- --proxy-protocol-from={{ join "," . }}
{{- end }}
- --trusted-proxy-hops={{ int64 $c.trustedProxyHops }}
- --client-ip-header={{ $c.clientIpHeader }}
{{- with $c.dnsServer }}
- --dns-server={{ . }}
{{- end }}
{{- with .Values.l4Ports }}
- --l4-ports={{ range $i, $p := . }}{{ if $i }},{{ end }}{{ int64 $p.containerPort | default $p.port }}/{{ lower ($p.protocol | default "TCP") }}{{ end }}
{{- end }}
{{- with $c.redis.url }}
- --redis-url={{ . }}
{{- end }}
{{- with $c.redis.caFile }}
- --redis-ca-file={{ . }}
{{- end }}
- --redis-timeout={{ $c.redis.timeout }}
{{- with $c.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* RBAC rules for the namespaced kinds the controller watches and writes (see rbac.yaml). */}}
{{- define "tidegate.namespacedRules" -}}
# Read what is compiled into the routing table (list + watch).
- apiGroups: [tidegate.dev]
  resources: [routes, backends, ratelimitpolicies]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch]
# Secrets and ConfigMaps are listed and watched by metadata only; the data of those a Route,
# Backend or Ingress references (certificates, CA bundles, htpasswd, JWKS) is read with get.
- apiGroups: [""]
  resources: [secrets, configmaps]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [list, watch]
# Status, written with server-side apply (PATCH) by the leader.
- apiGroups: [tidegate.dev]
  resources: [routes/status, backends/status, ratelimitpolicies/status]
  verbs: [patch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [patch]
# Warning Events about rejected objects (a repeated Event is patched into a series).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
