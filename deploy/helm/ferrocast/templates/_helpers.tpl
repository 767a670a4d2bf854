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

{{/* etcd client URLs the controllers use: bundled members (https with etcd.tls) or
external endpoints. */}}
{{- define "ferrocast.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $full := include "ferrocast.fullname" . }}
{{- $scheme := ternary "https" "http" .Values.etcd.tls.enabled }}
{{- $eps := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $eps = append $eps (printf "%s://%s-etcd-%d.%s-etcd-headless.%s.svc:2379" $scheme $full $i $full $.Release.Namespace) }}
{{- end }}
{{- join "," $eps }}
{{- else }}
{{- join "," .Values.etcd.external.endpoints }}
{{- end }}
{{- end }}

{{/* The Secret with the cluster CA (certificate and key) the init containers sign each
pod's certificate with: a Secret the user names, or the one the chart generates. Call with $. */}}
{{- define "ferrocast.caSecret" -}}
{{- default (printf "%s-cluster-ca" (include "ferrocast.fullname" .)) .Values.tls.ca.existingSecret }}
{{- end }}

{{/* The DNS names in a pod's certificate, comma-separated; call with (dict "ctx" $
"component" "origin" "pod" "$(POD_NAME)"). Nodes check the chain and the role in the SAN
URI, not names (pods move); the names are for operators (the controller Service) and for
tools that dial an origin by its headless name. */}}
{{- define "ferrocast.certDnsNames" -}}
{{- $full := include "ferrocast.fullname" .ctx }}
{{- $ns := .ctx.Release.Namespace }}
{{- $names := list }}
{{- if eq .component "controller" }}
{{- $svc := printf "%s-controller" $full }}
{{- $names = list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .ctx.Values.tls.clusterDomain) }}
{{- else if or (eq .component "origin") (eq .component "etcd") }}
{{- $headless := printf "%s-%s-headless.%s.svc" $full .component $ns }}
{{- $names = list (printf "%s.%s" .pod $headless) $headless }}
{{- else }}
{{- $names = list (printf "%s-%s.%s.svc" $full .component $ns) }}
{{- end }}
{{- join "," $names }}
{{- end }}

{{/* The init container that issues this pod's own certificate into the cluster-tls
emptyDir before the node starts: SAN URI ferrocast://ROLE/POD_NAME, valid tls.certDays
(ROLE: "role" when given, else "component"; etcd members, which `ferrocast certs` has no
role for, are issued the least one, edge, and present it to no Ferrocast node).
It is the only container that mounts the CA key. Nothing with cert-manager (the
csi-driver issues it). Call with (dict "ctx" $ "component" "edge"). */}}
{{- define "ferrocast.certsInitContainer" -}}
{{- if not .ctx.Values.certManager.enabled }}
- name: certs
  image: {{ include "ferrocast.image" .ctx }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  args:
    - certs
    - /etc/ferrocast/ca
    - --node={{ .role | default .component }}:$(POD_NAME)
    - --out={{ .ctx.Values.tls.mountPath }}
    {{- range splitList "," (include "ferrocast.certDnsNames" (dict "ctx" .ctx "component" .component "pod" "$(POD_NAME)")) }}
    - --dns={{ . }}
    {{- end }}
    {{- if eq .component "controller" }}
    # Followers redirect callers to the leader's pod IP (--advertise-host).
    - --dns=$(POD_IP)
    {{- end }}
    - --days={{ .ctx.Values.tls.certDays }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {memory: 64Mi}
  securityContext:
    {{- include "ferrocast.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: cluster-ca
      mountPath: /etc/ferrocast/ca
      readOnly: true
    - name: cluster-tls
      mountPath: {{ .ctx.Values.tls.mountPath }}
{{- end }}
{{- end }}

{{/* The main container's mount of its certificate directory (--tls-dir). */}}
{{- define "ferrocast.tlsMount" -}}
- name: cluster-tls
  mountPath: {{ .Values.tls.mountPath }}
  readOnly: true
{{- end }}

{{/* A pod's certificate volumes; call with (dict "ctx" $ "component" "edge"). Default: an
in-memory emptyDir the init container fills, and the CA Secret (mounted by the init
container only). With cert-manager: a csi.cert-manager.io volume with the same SAN URI,
renewed in place. */}}
{{- define "ferrocast.tlsVolumes" -}}
{{- $v := .ctx.Values }}
{{- if $v.certManager.enabled }}
{{- $cm := $v.certManager }}
{{- $issuer := $cm.issuerRef }}
{{- if not $issuer.name }}
{{- $issuer = dict "name" (printf "%s-cluster-ca" (include "ferrocast.fullname" .ctx)) "kind" "Issuer" "group" "cert-manager.io" }}
{{- end }}
- name: cluster-tls
  csi:
    driver: csi.cert-manager.io
    readOnly: true
    volumeAttributes:
      csi.cert-manager.io/issuer-name: {{ $issuer.name | quote }}
      csi.cert-manager.io/issuer-kind: {{ $issuer.kind | quote }}
      csi.cert-manager.io/issuer-group: {{ $issuer.group | quote }}
      csi.cert-manager.io/common-name: "${POD_NAME}"
      csi.cert-manager.io/uri-sans: {{ printf "ferrocast://%s/${POD_NAME}" (.role | default .component) | quote }}
      {{- /* localhost and the loopback addresses, as `ferrocast certs` adds them: a
      kubectl port-forward to the controller checks out. */}}
      csi.cert-manager.io/dns-names: {{ printf "localhost,%s" (include "ferrocast.certDnsNames" (dict "ctx" .ctx "component" .component "pod" "${POD_NAME}")) | quote }}
      csi.cert-manager.io/ip-sans: "127.0.0.1,::1"
      csi.cert-manager.io/duration: {{ $cm.duration | quote }}
      csi.cert-manager.io/renew-before: {{ $cm.renewBefore | quote }}
      csi.cert-manager.io/key-usages: "digital signature,server auth,client auth"
      csi.cert-manager.io/key-encoding: PKCS8
      csi.cert-manager.io/ca-file: ca.pem
      csi.cert-manager.io/certificate-file: node.pem
      csi.cert-manager.io/privatekey-file: node-key.pem
      csi.cert-manager.io/fs-group: "65532"
{{- else }}
- name: cluster-tls
  emptyDir:
    # The private key stays in memory, never on the node's disk.
    medium: Memory
    sizeLimit: 1Mi
- name: cluster-ca
  secret:
    secretName: {{ include "ferrocast.caSecret" .ctx }}
    defaultMode: 0440
    items:
      {{- if $v.tls.ca.existingSecret }}
      - key: {{ $v.tls.ca.certKey }}
        path: ca.pem
      - key: {{ $v.tls.ca.keyKey }}
        path: ca-key.pem
      {{- else }}
      - key: ca.pem
        path: ca.pem
      - key: ca-key.pem
        path: ca-key.pem
      {{- end }}
{{- end }}
{{- end }}

{{/* The Secret with the operator bearer token, or nothing when operators use
certificates only. Never open: with neither a token Secret nor an operator CA (which
needs gRPC TLS), the chart's generated token. Call with $. */}}
{{- define "ferrocast.operatorTokenSecret" -}}
{{- $c := .Values.controller }}
{{- if $c.operatorTokenSecret.name }}
{{- $c.operatorTokenSecret.name }}
{{- else if not (and $c.grpcTls.enabled $c.grpcTls.operatorCaSecret.name) }}
{{- printf "%s-operator-token" (include "ferrocast.fullname" .) }}
{{- end }}
{{- end }}

{{/* Settings every Ferrocast container shares; call with (dict "ctx" $ "component" "edge"). */}}
{{- define "ferrocast.commonEnv" -}}
# The node's id (--node-id=$(POD_NAME)), the name its certificate carries.
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
# The address a controller leader is advertised at (--advertise-host=$(POD_IP)).
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
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

{{/* "true" when the controllers talk TLS to etcd with a client certificate of the cluster
CA (the bundled etcd with etcd.tls.enabled). Call with $. */}}
{{- define "ferrocast.etcdClusterTls" -}}
{{- if and .Values.etcd.enabled .Values.etcd.tls.enabled -}}
true
{{- end }}
{{- end }}
