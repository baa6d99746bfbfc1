{{/* The chart's name, shortened to what a label value allows. */}}
{{- define "switchback.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-qualified name every object is named after. */}}
{{- define "switchback.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "switchback.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchback.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchback
{{- end }}

{{/* Labels that select the controller pods; never change them (Deployment selectors are immutable). */}}
{{- define "switchback.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchback.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The ServiceAccount the controller runs as. */}}
{{- define "switchback.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchback.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the master of the agents' tokens (key `token`), in the release namespace. */}}
{{- define "switchback.agentMasterSecretName" -}}
{{- default (printf "%s-agent-master" (include "switchback.fullname" .)) .Values.agentToken.existingSecret }}
{{- end }}

{{/* The Secret the agents of each namespace mount (key `token`: that namespace's own token). */}}
{{- define "switchback.agentTokenSecretName" -}}
{{- printf "%s-agent-token" (include "switchback.fullname" .) }}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "switchback.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The master agent token, base64 as stored in Secret data: the one already in the cluster when
there is one (so upgrades keep it and running agents keep working), else a fresh random one.
`lookup` answers nothing under `helm template`, so a template render always shows a new random
value.
*/}}
{{- define "switchback.agentToken" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "switchback.agentMasterSecretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "token") }}
{{- index $existing.data "token" }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}

{{/*
The rules the controller needs in the namespaces it watches (docs/operator.md, "RBAC the
controller needs"). Secrets are granted separately when rbac.secretNamespaces lists namespaces.
tests/tests/helm_chart.rs holds the same list and fails when the two differ.
*/}}
{{- define "switchback.watchRules" -}}
# Exactly what the controller calls (tests/tests/chart_controller.rs checks it from the API
# server's audit): rollouts, pods and bundles come from list+watch caches, never a get.
# ProxyRollouts: watched; patched for the finalizer; status by server-side apply.
- apiGroups: ["switchback.dev"]
  resources: ["proxyrollouts"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["switchback.dev"]
  resources: ["proxyrollouts/status"]
  verbs: ["patch"]
# Pods: watched; annotated (desired/applied digest), and the ConfigApplied condition.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
# ConfigMaps: bundles (create, list on resume, delete in the finalizer) and incident reports
# (server-side apply: patch, and create the first time).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if not .Values.rbac.secretNamespaces }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/* The restricted Pod Security container context, the same for every container. */}}
{{- define "switchback.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}
