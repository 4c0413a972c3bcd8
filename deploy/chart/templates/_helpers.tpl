{{/*
Every object carries the labels `tollgate manifests` gives it: the chart installs exactly what
`tollgate manifests --service NAMESPACE/NAME --register` renders (tests/helm_chart.rs compares the two).
*/}}
{{- define "tollgate.labels" -}}
app.kubernetes.io/managed-by: tollgate
app.kubernetes.io/name: tollgate
{{- end }}

{{/*
Where the pods may run: settings of the cluster, not of tollgate, so `tollgate manifests` has no
flags for them and renders none; each is left out while empty.
*/}}
{{- define "tollgate.placement" -}}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Where the certificates come from: self, cert-manager or secret. */}}
{{- define "tollgate.certSource" -}}
{{- $source := .Values.certificates.source -}}
{{- if not (has $source (list "self" "cert-manager" "secret")) -}}
{{- fail (printf "certificates.source is %q; it must be self, cert-manager or secret" $source) -}}
{{- end -}}
{{- if and (eq $source "secret") (not .Values.certificates.secretName) -}}
{{- fail "certificates.source is secret: set certificates.secretName to a kubernetes.io/tls Secret holding tls.crt, tls.key and ca.crt" -}}
{{- end -}}
{{ $source }}
{{- end }}

{{- define "tollgate.tlsSecret" -}}
{{- if eq (include "tollgate.certSource" .) "secret" -}}
{{ .Values.certificates.secretName }}
{{- else -}}
{{ .Release.Name }}-tls
{{- end -}}
{{- end }}

{{/*
A leader-elected component (reconciler, audit): its ServiceAccount, RBAC and Deployment.
Arguments: the root context as .root, the component's name suffix, RBAC rules, container args
and readiness path.
*/}}
{{- define "tollgate.component" -}}
{{- $root := .root -}}
{{- $account := printf "%s-%s" $root.Release.Name .suffix -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $account }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tollgate.labels" $root | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $account }}
  labels:
    {{- include "tollgate.labels" $root | nindent 4 }}
rules:
  {{- toYaml .rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $account }}
  labels:
    {{- include "tollgate.labels" $root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $account }}
subjects:
  - kind: ServiceAccount
    name: {{ $account }}
    namespace: {{ $root.Release.Namespace }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $account }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tollgate.labels" $root | nindent 4 }}
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $account }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tollgate.labels" $root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $account }}
subjects:
  - kind: ServiceAccount
    name: {{ $account }}
    namespace: {{ $root.Release.Namespace }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $account }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tollgate.labels" $root | nindent 4 }}
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ $account }}
  template:
    metadata:
      labels:
        app.kubernetes.io/managed-by: tollgate
        app.kubernetes.io/name: {{ $account }}
    spec:
      serviceAccountName: {{ $account }}
      terminationGracePeriodSeconds: 20
      {{- with (include "tollgate.placement" $root | trim) }}{{ . | nindent 6 }}{{ end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: {{ .suffix }}
          image: {{ $root.Values.image | quote }}
          args:
            {{- toYaml .args | nindent 12 }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
          ports:
            - name: metrics
              containerPort: 8080
          readinessProbe:
            httpGet:
              path: {{ .readinessPath }}
              port: metrics
            periodSeconds: 10
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            periodSeconds: 10
          resources:
            {{- toYaml (index $root.Values.resources .suffix) | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: policies
              mountPath: /etc/tollgate/policies
              readOnly: true
      volumes:
        - name: policies
          configMap:
            name: {{ $root.Release.Name }}-policies
{{- end }}
