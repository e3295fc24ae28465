{{/* Names, labels and the pieces of the pod spec that several containers share. */}}

{{- define "regate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "regate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "regate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "regate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "regate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "regate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "regate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "regate.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "regate.fullname" .)) .Values.tls.secret.name -}}
{{- end -}}

{{/* The pod's SPIFFE ID, as cert-manager writes it into the certificate and SPIRE issues it. */}}
{{- define "regate.spiffeID" -}}
{{- printf "spiffe://%s/ns/%s/sa/%s" .Values.spiffe.trustDomain .Release.Namespace (include "regate.serviceAccountName" .) -}}
{{- end -}}

{{/*
A regate DURATION (500ms, 15s, 2m, 1h, or bare seconds) as whole seconds, rounded up, so the
pod's grace period can be derived from --shutdown-grace and never fall short of it.
*/}}
{{- define "regate.durationSeconds" -}}
{{- $d := toString . -}}
{{- if regexMatch "^[0-9]+ms$" $d -}}
{{- div (add (trimSuffix "ms" $d | atoi) 999) 1000 -}}
{{- else if regexMatch "^[0-9]+s$" $d -}}
{{- trimSuffix "s" $d | atoi -}}
{{- else if regexMatch "^[0-9]+m$" $d -}}
{{- mul (trimSuffix "m" $d | atoi) 60 -}}
{{- else if regexMatch "^[0-9]+h$" $d -}}
{{- mul (trimSuffix "h" $d | atoi) 3600 -}}
{{- else if regexMatch "^[0-9]+$" $d -}}
{{- $d | atoi -}}
{{- else -}}
{{- fail (printf "regate.shutdownGrace: %q is not a duration like 500ms, 15s, 2m or 1h" $d) -}}
{{- end -}}
{{- end -}}

{{/* The preStop sleep counts whether or not the cluster can run it: a longer bound is harmless. */}}
{{- define "regate.terminationGracePeriodSeconds" -}}
{{- add (int .Values.app.preStopSleepSeconds) (include "regate.durationSeconds" .Values.regate.shutdownGrace | atoi) .Values.terminationGraceExtraSeconds -}}
{{- end -}}

{{/*
Values the schema cannot judge alone, refused before anything renders: each is a pod that
could not start, or one that would trust more than it should.
*/}}
{{- define "regate.validate" -}}
{{- $kube := .Capabilities.KubeVersion.Version -}}
{{- if and (eq .Values.regate.sidecar "native") (semverCompare "<1.29.0-0" $kube) -}}
{{- fail (printf "regate.sidecar: native needs Kubernetes 1.29 or later (sidecar init containers), and the cluster is %s: set regate.sidecar=classic (helm template renders for its own default version unless given --kube-version)" $kube) -}}
{{- end -}}
{{- if and (eq .Values.tls.mode "csi") .Values.tls.csi.includeFederatedDomains -}}
{{- fail "tls.csi.includeFederatedDomains: federation needs tls.mode=spire, where regate trusts each bundle only for its own trust domain; in csi mode spiffe-helper would write every federated bundle into the one ca.crt, and a federated CA could then sign IDs of this trust domain" -}}
{{- end -}}
{{/* One network namespace for the whole pod: every listener needs a port of its own. */}}
{{- $ports := list (list "regate.port" (int .Values.regate.port)) (list "regate.healthPort" (int .Values.regate.healthPort)) -}}
{{- if ne .Values.regate.admin "none" -}}
{{- if not (regexMatch ":[0-9]+$" .Values.regate.admin) -}}
{{- fail (printf "regate.admin: %q is not IP:port on loopback, or none" .Values.regate.admin) -}}
{{- end -}}
{{- $ports = append $ports (list "regate.admin" (regexReplaceAll "^.*:" .Values.regate.admin "" | int)) -}}
{{- end -}}
{{- $ports = append $ports (list "app.port" (int .Values.app.port)) -}}
{{- $seen := dict -}}
{{- range $ports -}}
{{- $key := toString (index . 1) -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "%s and %s are both port %s: regate's listeners and the app share the pod's network, so each needs a port of its own" (get $seen $key) (index . 0) $key) -}}
{{- end -}}
{{- $_ := set $seen $key (index . 0) -}}
{{- end -}}
{{- end -}}

{{/*
The preStop sleep as a lifecycle, or nothing: the sleep handler needs Kubernetes 1.30 (beta,
on by default) and no binary in the image, which regate's distroless image lacks.
*/}}
{{- define "regate.preStopSleep" -}}
{{- $s := int .Values.app.preStopSleepSeconds -}}
{{- if and (gt $s 0) (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) -}}
preStop:
  sleep:
    seconds: {{ $s }}
{{- end -}}
{{- end -}}

{{/* Where each input is mounted in the pod; regate.yaml names these absolute paths. */}}
{{- define "regate.paths.tls" -}}/var/run/regate/tls{{- end -}}
{{- define "regate.paths.clientCA" -}}/var/run/regate/client-ca{{- end -}}
{{- define "regate.paths.policies" -}}/var/run/regate/policies{{- end -}}
{{- define "regate.paths.gitRoot" -}}/var/run/regate/git{{- end -}}
{{- define "regate.paths.spiffe" -}}/spiffe-workload-api{{- end -}}

{{/* The directory regate reads policies from: with git-sync, under the published link. */}}
{{- define "regate.policiesDir" -}}
{{- if eq .Values.policies.source "git" -}}
{{- $sub := trimAll "/" .Values.policies.git.path -}}
{{- if has ".." (splitList "/" $sub) -}}
{{- fail "policies.git.path must lie inside the repository (no ..)" -}}
{{- end -}}
{{- $base := printf "%s/%s" (include "regate.paths.gitRoot" .) .Values.policies.git.link -}}
{{- if $sub -}}{{ printf "%s/%s" $base $sub }}{{- else -}}{{ $base }}{{- end -}}
{{- else -}}
{{- include "regate.paths.policies" . -}}
{{- end -}}
{{- end -}}

{{/* regate's own YAML file (keys as in README's flag table). */}}
{{- define "regate.config" -}}
{{- $v := .Values.regate -}}
{{- $cfg := dict
  "listen" (printf "0.0.0.0:%d" (int $v.port))
  "health_listen" (printf "0.0.0.0:%d" (int $v.healthPort))
  "admin" $v.admin
  "upstream" (printf "http://127.0.0.1:%d" (int .Values.app.port))
  "policies" (include "regate.policiesDir" .)
  "query" $v.query
  "shutdown_grace" (toString $v.shutdownGrace)
  "reload_interval" (toString $v.reloadInterval)
  "log_format" $v.logFormat
  "decision_log" "stdout" -}}
{{- if kindIs "invalid" $v.trustDomains -}}
{{- $_ := set $cfg "trust_domains" (list .Values.spiffe.trustDomain) -}}
{{- else if $v.trustDomains -}}
{{- $_ := set $cfg "trust_domains" $v.trustDomains -}}
{{- end -}}
{{- if $v.context -}}
{{- $_ := set $cfg "context" $v.context -}}
{{- end -}}
{{- if eq .Values.tls.mode "spire" -}}
{{- $_ := set $cfg "spiffe_socket" (printf "unix://%s/%s" (include "regate.paths.spiffe" .) .Values.tls.spire.socketName) -}}
{{- else -}}
{{- $tls := include "regate.paths.tls" . -}}
{{- $_ := set $cfg "cert" (printf "%s/tls.crt" $tls) -}}
{{- $_ := set $cfg "key" (printf "%s/tls.key" $tls) -}}
{{- if .Values.tls.clientCA.configMap -}}
{{- $_ := set $cfg "client_ca" (printf "%s/%s" (include "regate.paths.clientCA" .) .Values.tls.clientCA.key) -}}
{{- else -}}
{{- $_ := set $cfg "client_ca" (printf "%s/ca.crt" $tls) -}}
{{- end -}}
{{- end -}}
{{- with .Values.revocationsFeed -}}
{{- if .url -}}
{{- $feed := dict "url" .url "polling" (toString .polling) "max_age" (toString .maxAge) -}}
{{- if .longPollingTimeout -}}
{{- $_ := set $feed "long_polling_timeout" (toString .longPollingTimeout) -}}
{{- end -}}
{{- $_ := set $cfg "revocations_feed" $feed -}}
{{- end -}}
{{- end -}}
{{- toYaml (mergeOverwrite $cfg $v.extraConfig) -}}
{{- end -}}

{{- define "regate.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* regate itself: the same container as a native or a classic sidecar. */}}
{{- define "regate.container" -}}
- name: regate
  image: "{{ .Values.regate.image.repository }}:{{ default .Chart.AppVersion .Values.regate.image.tag }}"
  imagePullPolicy: {{ .Values.regate.image.pullPolicy }}
  {{- if eq .Values.regate.sidecar "native" }}
  restartPolicy: Always
  {{- end }}
  args: ["run", "--config", "/etc/regate/regate.yaml"]
  {{- if ne .Values.regate.sidecar "native" }}
  {{- with include "regate.preStopSleep" . }}
  # A classic sidecar gets its SIGTERM with the app's: the same sleep keeps regate accepting
  # while the Service's endpoints go away. (A native one is stopped after the app anyway.)
  lifecycle:
    {{- . | nindent 4 }}
  {{- end }}
  {{- end }}
  ports:
    - {name: https, containerPort: {{ .Values.regate.port }}, protocol: TCP}
    - {name: health, containerPort: {{ .Values.regate.healthPort }}, protocol: TCP}
  # Ready means certificates and policies are loaded and the listener is bound; as a native
  # sidecar, the app starts only then.
  startupProbe:
    httpGet: {path: /readyz, port: health}
    periodSeconds: 1
    failureThreshold: 60
  livenessProbe:
    httpGet: {path: /healthz, port: health}
    periodSeconds: 10
  readinessProbe:
    httpGet: {path: /readyz, port: health}
    periodSeconds: 5
  resources:
    {{- toYaml .Values.regate.resources | nindent 4 }}
  securityContext:
    {{- include "regate.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - {name: config, mountPath: /etc/regate, readOnly: true}
    {{- if eq .Values.policies.source "git" }}
    - {name: git, mountPath: {{ include "regate.paths.gitRoot" . }}, readOnly: true}
    {{- else }}
    - {name: policies, mountPath: {{ include "regate.paths.policies" . }}, readOnly: true}
    {{- end }}
    {{- if eq .Values.tls.mode "spire" }}
    - {name: spiffe-workload-api, mountPath: {{ include "regate.paths.spiffe" . }}, readOnly: true}
    {{- else }}
    - {name: tls, mountPath: {{ include "regate.paths.tls" . }}, readOnly: true}
    {{- if .Values.tls.clientCA.configMap }}
    - {name: client-ca, mountPath: {{ include "regate.paths.clientCA" . }}, readOnly: true}
    {{- end }}
    {{- end }}
{{- end -}}

{{/* git-sync: once as an init container (--one-time), then as a sidecar for updates. */}}
{{- define "regate.gitSync" -}}
{{- $ctx := index . 0 -}}
{{- $oneTime := index . 1 -}}
{{- $g := $ctx.Values.policies.git -}}
- name: {{ if $oneTime }}git-sync-init{{ else }}git-sync{{ end }}
  image: "{{ $g.image.repository }}:{{ $g.image.tag }}"
  imagePullPolicy: {{ $g.image.pullPolicy }}
  {{- if and (not $oneTime) (eq $ctx.Values.regate.sidecar "native") }}
  restartPolicy: Always
  {{- end }}
  args:
    - --repo={{ required "policies.git.repo is required when policies.source is git" $g.repo }}
    - --ref={{ $g.ref }}
    - --root={{ include "regate.paths.gitRoot" $ctx }}
    - --link={{ $g.link }}
    - --depth={{ $g.depth }}
    {{- if $oneTime }}
    - --one-time
    {{- else }}
    - --period={{ $g.period }}
    {{- end }}
    {{- if eq $g.auth.type "ssh" }}
    - --ssh-key-file=/etc/git-secret/ssh-privatekey
    - --ssh-known-hosts-file=/etc/git-secret/known_hosts
    {{- end }}
    {{- range $g.extraArgs }}
    - {{ . }}
    {{- end }}
  {{- if eq $g.auth.type "password" }}
  env:
    - name: GITSYNC_USERNAME
      valueFrom: {secretKeyRef: {name: {{ $g.auth.secretName }}, key: username}}
    - name: GITSYNC_PASSWORD
      valueFrom: {secretKeyRef: {name: {{ $g.auth.secretName }}, key: password}}
  {{- end }}
  resources:
    {{- toYaml $g.resources | nindent 4 }}
  securityContext:
    {{- toYaml (mergeOverwrite (deepCopy $ctx.Values.containerSecurityContext) $g.securityContext) | nindent 4 }}
  volumeMounts:
    - {name: git, mountPath: {{ include "regate.paths.gitRoot" $ctx }}}
    - {name: git-sync-tmp, mountPath: /tmp}
    {{- if eq $g.auth.type "ssh" }}
    - {name: git-secret, mountPath: /etc/git-secret, readOnly: true}
    {{- end }}
{{- end -}}

{{/* spiffe-helper: fetch the SVID once before regate starts, then keep the files fresh. */}}
{{- define "regate.spiffeHelper" -}}
{{- $ctx := index . 0 -}}
{{- $oneTime := index . 1 -}}
{{- $c := $ctx.Values.tls.csi -}}
- name: {{ if $oneTime }}spiffe-helper-init{{ else }}spiffe-helper{{ end }}
  image: "{{ $c.helperImage.repository }}:{{ $c.helperImage.tag }}"
  imagePullPolicy: {{ $c.helperImage.pullPolicy }}
  {{- if and (not $oneTime) (eq $ctx.Values.regate.sidecar "native") }}
  restartPolicy: Always
  {{- end }}
  args: ["-config", "/etc/spiffe-helper/helper.conf", "-daemon-mode={{ not $oneTime }}"]
  resources:
    {{- toYaml $c.resources | nindent 4 }}
  securityContext:
    {{- include "regate.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    - {name: spiffe-helper-config, mountPath: /etc/spiffe-helper, readOnly: true}
    - {name: spiffe-workload-api, mountPath: {{ include "regate.paths.spiffe" $ctx }}, readOnly: true}
    - {name: tls, mountPath: {{ include "regate.paths.tls" $ctx }}}
{{- end -}}
