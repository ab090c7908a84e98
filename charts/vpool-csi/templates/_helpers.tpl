{{- define "vpool.name" -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- end -}}

{{- define "vpool.labels" -}}
app.kubernetes.io/name: vpool-csi
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "vpool.selector" -}}
app.kubernetes.io/name: vpool-csi
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Node-local pools (file, lvm) provision on the node; libvirt provisions on the hypervisor. */}}
{{- define "vpool.nodeLocal" -}}{{ if ne .Values.backend "libvirt" }}true{{ end }}{{- end -}}

{{- define "vpool.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}

{{- define "vpool.sidecarImage" -}}{{ .repository }}:{{ .tag }}{{- end -}}

{{/* Sidecars: non-root, read-only root filesystem, no capabilities. */}}
{{- define "vpool.sidecarSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.sidecars.runAsUser }}
  runAsGroup: {{ .Values.sidecars.runAsUser }}
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "vpool.sidecarCommon" -}}
imagePullPolicy: {{ .Values.sidecars.pullPolicy }}
resources:
  {{- toYaml .Values.sidecars.resources | nindent 2 }}
{{ include "vpool.sidecarSecurity" . }}
{{- end -}}

{{/* The driver's flags for the selected backend. */}}
{{- define "vpool.backendArgs" -}}
- --backend={{ .Values.backend }}
{{- if eq .Values.backend "file" }}
- --pool-dir={{ .Values.file.poolDir }}
{{- else if eq .Values.backend "lvm" }}
- --vg={{ .Values.lvm.vg }}
- --overprovision-ratio={{ .Values.lvm.overprovisionRatio }}
{{- else }}
- --hypervisor={{ .Values.libvirt.hypervisor }}
- --attach-timeout={{ .Values.libvirt.attachTimeout }}
{{- end }}
- --driver-name={{ .Values.driverName }}
- --reserve={{ .Values.reserve }}
- --max-volumes-per-node={{ .Values.maxVolumesPerNode }}
- --log-level={{ .Values.logLevel }}
{{- end -}}

{{- define "vpool.leaderElectionArgs" -}}
- --leader-election
- --leader-election-namespace={{ .Release.Namespace }}
{{- end -}}

{{/* The node plugin pods' label selector: transfer peers are found by it, and certificates issued only to its pods. */}}
{{- define "vpool.nodePodSelector" -}}
app.kubernetes.io/name=vpool-csi,app.kubernetes.io/instance={{ .Release.Name }},app.kubernetes.io/component=node
{{- end }}
