{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "ferrocast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; every object name starts with it. */}}
{{- define "ferrocast.fullname" -}}
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

{{- define "ferrocast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; call with (dict "ctx" $ "component" "edge"). */}}
{{- define "ferrocast.labels" -}}
helm.sh/chart: {{ include "ferrocast.chart" .ctx }}
{{ include "ferrocast.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: ferrocast
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The stable subset used by selectors. */}}
{{- define "ferrocast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrocast.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ferrocast.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ferrocast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferrocast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* etcd client URLs the controllers use: bundled members or external endpoints. */}}
{{- define "ferrocast.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $full := include "ferrocast.fullname" . }}
{{- $eps := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $eps = append $eps (printf "http://%s-etcd-%d.%s-etcd-headless.%s.svc:2379" $full $i $full $.Release.Namespace) }}
{{- end }}
{{- join "," $eps }}
{{- else }}
{{- join "," .Values.etcd.external.endpoints }}
{{- end }}
{{- end }}

{{/* The Secret holding the cluster TLS files. */}}
{{- define "ferrocast.tlsSecret" -}}
{{- if .ctx.Values.certManager.enabled }}
{{- printf "%s-%s-tls" (include "ferrocast.fullname" .ctx) .component }}
{{- else }}
{{- required "tls.existingSecret is required unless certManager.enabled (kubectl create secret generic NAME --from-file=DIR, DIR made by `ferrocast certs DIR`)" .ctx.Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{/* The cluster TLS volume, mapped onto the names --tls-dir expects. */}}
{{- define "ferrocast.tlsVolume" -}}
- name: cluster-tls
  secret:
    secretName: {{ include "ferrocast.tlsSecret" . }}
    defaultMode: 0440
    {{- if .ctx.Values.certManager.enabled }}
    items:
      - key: ca.crt
        path: ca.pem
      - key: tls.crt
        path: node.pem
      - key: tls.key
        path: node-key.pem
    {{- end }}
{{- end }}

{{/* Settings every Ferrocast container shares; call with (dict "ctx" $ "component" "edge"). */}}
{{- define "ferrocast.commonEnv" -}}
- name: FERROCAST_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: FERROCAST_LOG_FORMAT
  value: {{ .ctx.Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .ctx.Values.logLevel | quote }}
{{- if .ctx.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .ctx.Values.tracing.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_TRACES_SAMPLER
  value: {{ .ctx.Values.tracing.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .ctx.Values.tracing.samplerArg | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "ferrocast-%s" .component | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s,service.namespace=%s" .ctx.Release.Namespace .ctx.Release.Name | quote }}
{{- end }}
{{- end }}

{{/* The admission webhook's settings (origins and edges); call with (dict "ctx" $ "component" "edge"). */}}
{{- define "ferrocast.admissionEnv" -}}
{{- with .ctx.Values.admission }}
{{- if .url -}}
- name: FERROCAST_ADMISSION_URL
  value: {{ .url | quote }}
- name: FERROCAST_ADMISSION_TIMEOUT
  value: {{ .timeoutSeconds | quote }}
- name: FERROCAST_ADMISSION_FAIL
  value: {{ .fail | quote }}
{{- if .secret.name }}
- name: FERROCAST_ADMISSION_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .secret.name }}
      key: {{ .secret.key }}
{{- end }}
{{- if include "ferrocast.admissionCa" $.ctx }}
- name: FERROCAST_ADMISSION_CA
  value: /etc/ferrocast/admission-ca/ca.pem
{{- end }}
{{- if eq $.component "edge" }}
- name: FERROCAST_ADMISSION_CACHE_TTL
  value: {{ .cacheTtlSeconds | quote }}
{{- if .clientIpHeader }}
- name: FERROCAST_ADMISSION_CLIENT_IP_HEADER
  value: {{ .clientIpHeader | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when the admission webhook has a CA bundle of its own (an https:// URL and a
Secret or ConfigMap); fails the render on a CA the binary would refuse. Call with $. */}}
{{- define "ferrocast.admissionCa" -}}
{{- with .Values.admission }}
{{- if and .url (or .ca.secretName .ca.configMapName) }}
{{- if and .ca.secretName .ca.configMapName }}
{{- fail "admission.ca: set secretName or configMapName, not both" }}
{{- end }}
{{- if not (hasPrefix "https://" .url) }}
{{- fail "admission.ca: only for an https:// admission.url" }}
{{- end -}}
true
{{- end }}
{{- end }}
{{- end }}

{{/* The admission CA's volumeMount, when there is one. Call with $. */}}
{{- define "ferrocast.admissionCaMount" -}}
{{- if include "ferrocast.admissionCa" . -}}
- name: admission-ca
  mountPath: /etc/ferrocast/admission-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* The admission CA's volume (its key mounted as ca.pem), when there is one. Call with $. */}}
{{- define "ferrocast.admissionCaVolume" -}}
{{- if include "ferrocast.admissionCa" . -}}
{{- with .Values.admission.ca -}}
- name: admission-ca
{{- if .secretName }}
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0444
    items:
      - key: {{ .key }}
        path: ca.pem
{{- else }}
  configMap:
    name: {{ .configMapName }}
    defaultMode: 0444
    items:
      - key: {{ .key }}
        path: ca.pem
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Hardened container defaults. */}}
{{- define "ferrocast.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Fails the render when the pod could be killed before it has drained. */}}
{{- define "ferrocast.checkDrain" -}}
{{- $min := add .drain.preStopSeconds .drain.drainSeconds }}
{{- if le (int .drain.terminationGracePeriodSeconds) (int $min) }}
{{- fail (printf "%s: drain.terminationGracePeriodSeconds (%v) must exceed drain.preStopSeconds + drain.drainSeconds (%v)" .role .drain.terminationGracePeriodSeconds $min) }}
{{- end }}
{{- end }}

{{/* The controller's gRPC URL for nodes: https when the controller serves TLS. */}}
{{- define "ferrocast.controllerUrl" -}}
{{- $scheme := ternary "https" "http" .Values.controller.grpcTls.enabled -}}
{{- printf "%s://%s-controller.%s.svc:%v" $scheme (include "ferrocast.fullname" .) .Release.Namespace .Values.controller.grpcPort -}}
{{- end }}
