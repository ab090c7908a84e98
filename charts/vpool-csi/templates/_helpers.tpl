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

{{/*
  Group snapshots on a node-local pool (file, lvm): the snapshot router and a central csi-snapshotter run
  in the controller Deployment and hand each call to the node holding the volumes (docs/backup.md).
*/}}
{{- define "vpool.snapshotRouter" -}}{{ if and (include "vpool.nodeLocal" .) .Values.groupSnapshots.enabled }}true{{ end }}{{- end -}}
{{/*
  The router (the controller's `vpool-csi snapshot-router`) on a node-local pool hands calls to the node
  holding the volumes over the transfer listener: the central csi-snapshotter's (group snapshots) and the
  csi-resizer's ControllerModifyVolume (VolumeAttributesClasses). Without the transfer there is no way to a node.
*/}}
{{- define "vpool.router" -}}{{ if and (include "vpool.nodeLocal" .) .Values.transfer.enabled (or .Values.groupSnapshots.enabled .Values.volumeAttributesClasses.enabled) }}true{{ end }}{{- end -}}
{{- define "vpool.routerTakes" -}}
{{- $takes := list -}}
{{- if include "vpool.snapshotRouter" . }}{{ $takes = append $takes "snapshots" }}{{ end -}}
{{- if and (include "vpool.router" .) (include "vpool.modifiesVolumes" .) }}{{ $takes = append $takes "modify" }}{{ end -}}
{{ join "," $takes }}
{{- end -}}
{{/* Claims can change class on a live volume: file/lvm through the router (to the node holding it); libvirt on the controller itself. */}}
{{- define "vpool.modifiesVolumes" -}}{{ if and .Values.volumeAttributesClasses.enabled (or (not (include "vpool.nodeLocal" .)) (include "vpool.router" .)) }}true{{ end }}{{- end -}}

{{/* The controller pods' label selector: the snapshot router's certificate is issued to, and taken from, its pods only. */}}
{{- define "vpool.controllerPodSelector" -}}
app.kubernetes.io/name=vpool-csi,app.kubernetes.io/instance={{ .Release.Name }},app.kubernetes.io/component=controller
{{- end }}

{{/* The node plugin pods' label selector: transfer peers are found by it, and certificates issued only to its pods. */}}
{{- define "vpool.nodePodSelector" -}}
app.kubernetes.io/name=vpool-csi,app.kubernetes.io/instance={{ .Release.Name }},app.kubernetes.io/component=node
{{- end }}

{{/* The external-snapshot-metadata sidecar (docs/backup.md), beside the driver container that holds the pool. */}}
{{- define "vpool.snapshotMetadataSidecar" -}}
- name: csi-snapshot-metadata
  image: {{ include "vpool.sidecarImage" .Values.snapshotMetadata.image }}
  args:
    - --csi-address=/csi/csi.sock
    - --port={{ .Values.snapshotMetadata.port }}
    - --http-endpoint=:{{ .Values.snapshotMetadata.healthPort }}
    - --tls-cert=/etc/snapshot-metadata-tls/tls.crt
    - --tls-key=/etc/snapshot-metadata-tls/tls.key
    # Given here, so the sidecar need not read the SnapshotMetadataService object for it.
    - --audience={{ .Values.snapshotMetadata.audience | default .Values.driverName }}
    - --timeout=120s
    - --max-streaming-duration-min={{ .Values.snapshotMetadata.maxStreamingMinutes }}
    # Its metrics label each call with the VolumeSnapshot's namespace and name: not served.
    - --disable-metrics
  # No readiness probe: the sidecar listens only once the driver is ready, and a probe would hold a node
  # plugin pod not Ready (stalling the DaemonSet's rollout) for as long as its pool is not served.
  ports:
    - name: snapshot-meta
      containerPort: {{ .Values.snapshotMetadata.port }}
  {{- include "vpool.sidecarCommon" . | nindent 2 }}
  volumeMounts:
    - name: socket-dir
      mountPath: /csi
    - name: snapshot-metadata-tls
      mountPath: /etc/snapshot-metadata-tls
      readOnly: true
{{- end -}}

{{- define "vpool.snapshotMetadataVolume" -}}
- name: snapshot-metadata-tls
  secret:
    secretName: {{ .Values.snapshotMetadata.tls.existingSecret }}
    # Mounted by the sidecar alone, which runs as a non-root user the files' owner (root) is not.
    defaultMode: 0444
{{- end -}}
