{{/* Names and labels. */}}
{{- define "breakglass.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "breakglass.fullname" -}}
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

{{- define "breakglass.workerName" -}}
{{- printf "%s-worker" (include "breakglass.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "breakglass.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "breakglass.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "breakglass.selectorLabels" -}}
app.kubernetes.io/name: {{ include "breakglass.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "breakglass.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "breakglass.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "breakglass.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
Fixed paths inside the pod. Secrets are projected under fixed file names (volume items), so
the config never depends on how the Secret's keys are named.
*/}}
{{- define "breakglass.paths" -}}
config: /etc/breakglass/config/config.json
devvmKey: /etc/breakglass/ssh/devvm_key
pveKey: /etc/breakglass/ssh/pve_key
knownHosts: /etc/breakglass/ssh/known_hosts
anthropicKey: /etc/breakglass/anthropic/api-key
temporalCa: /etc/breakglass/temporal-tls/ca.crt
temporalCert: /etc/breakglass/temporal-tls/tls.crt
temporalKey: /etc/breakglass/temporal-tls/tls.key
temporalApiKey: /etc/breakglass/temporal-api-key/api-key
proxySecret: /etc/breakglass/proxy-secret/secret
metricsToken: /etc/breakglass/metrics-token/token
identityKey: /etc/breakglass/identity/key
codecKeys: /etc/breakglass/codec
dataDir: /data
{{- end -}}

{{/* The worker's build id for Worker Deployment Versioning: given, else the image tag or digest, else appVersion. */}}
{{- define "breakglass.buildId" -}}
{{- if .Values.versioning.buildId -}}
{{- .Values.versioning.buildId -}}
{{- else if .Values.image.digest -}}
{{- .Values.image.digest | trimPrefix "sha256:" | trunc 20 -}}
{{- else -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{/* Is TLS to Temporal on? An API key (Temporal Cloud) implies TLS. */}}
{{- define "breakglass.temporalTls" -}}
{{- if or .Values.temporal.tls.enabled .Values.temporal.apiKey.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Is mTLS configured (client certificate and key from the TLS Secret)? */}}
{{- define "breakglass.temporalMtls" -}}
{{- $tls := .Values.temporal.tls -}}
{{- if and $tls.enabled $tls.existingSecret $tls.items.cert $tls.items.key -}}true{{- end -}}
{{- end -}}

{{/*
Chart-level consistency checks the schema cannot express. Each failure names the value to fix.
*/}}
{{- define "breakglass.validate" -}}
{{- $v := .Values -}}
{{- $tls := $v.temporal.tls -}}
{{- if and $tls.existingSecret (not $tls.enabled) -}}
{{- fail "temporal.tls.enabled: must be true when temporal.tls.existingSecret is set" -}}
{{- end -}}
{{- if and $tls.existingSecret (not (or $tls.items.ca (and $tls.items.cert $tls.items.key))) -}}
{{- fail "temporal.tls.items: name the CA (ca) and/or both the client certificate (cert) and key (key)" -}}
{{- end -}}
{{- if and $tls.existingSecret (or $tls.items.cert $tls.items.key) (not (and $tls.items.cert $tls.items.key)) -}}
{{- fail "temporal.tls.items: mTLS needs both cert and key (or neither)" -}}
{{- end -}}
{{- if and $v.ingress.enabled (not $v.ingress.host) -}}
{{- fail "ingress.host: required when ingress.enabled is true" -}}
{{- end -}}
{{- if and (eq $v.auth.mode "proxy") (not $v.existingConfigSecret.name) (or (empty $v.auth.proxy.trustedCidrs) (empty $v.auth.operators)) -}}
{{- fail "auth.proxy.trustedCidrs and auth.operators: both required when auth.mode is proxy" -}}
{{- end -}}
{{- if and $v.worker.separate (not $v.identity.existingSecret) -}}
{{- fail "identity.existingSecret: required when worker.separate is true (the key the console signs operator messages with and the worker checks)" -}}
{{- end -}}
{{- if and $v.codec.enabled $v.codec.keys (not $v.codec.existingSecret) (not $v.existingConfigSecret.name) -}}
{{- fail "codec.existingSecret: required when codec.keys is set (the Secret holding the payload codec keys)" -}}
{{- end -}}
{{- if and $v.codec.enabled $v.codec.existingSecret (empty $v.codec.keys) -}}
{{- fail "codec.keys: list the Secret's keys as { id, item }, the encrypting key first" -}}
{{- end -}}
{{- if eq (lower $v.auth.proxy.header) (lower $v.auth.proxy.secretHeader) -}}
{{- fail "auth.proxy.secretHeader: must differ from auth.proxy.header" -}}
{{- end -}}
{{- if and (eq $v.auth.mode "proxy") (not $v.auth.proxy.secret.existingSecret) -}}
{{- fail "auth.proxy.secret.existingSecret: required when auth.mode is proxy (the Secret holding the shared secret the proxy sends)" -}}
{{- end -}}
{{- if and (not $v.ssh.items.knownHosts) (not $v.existingConfigSecret.name) -}}
{{- if or (and $v.devvm.host (empty $v.devvm.fingerprints)) (and $v.pve.host (empty $v.pve.fingerprints)) -}}
{{- fail "ssh.items.knownHosts: empty, so devvm.fingerprints and pve.fingerprints must pin the host keys" -}}
{{- end -}}
{{- end -}}
{{- if $v.networkPolicy.enabled -}}
{{- $fromProxy := $v.networkPolicy.ingress.fromProxy -}}
{{- if and $fromProxy.enabled (not (or $fromProxy.namespaceSelector $fromProxy.podSelector)) -}}
{{- fail "networkPolicy.ingress.fromProxy: set namespaceSelector and/or podSelector, or enabled: false" -}}
{{- end -}}
{{- $_ := include "breakglass.sshCidrs" (dict "name" "devvm" "endpoint" $v.devvm "cidrs" $v.networkPolicy.egress.devvm.cidrs) -}}
{{- $_ := include "breakglass.sshCidrs" (dict "name" "pve" "endpoint" $v.pve "cidrs" $v.networkPolicy.egress.pve.cidrs) -}}
{{- if and $v.temporal.address (empty $v.networkPolicy.egress.temporal.cidrs) (empty $v.networkPolicy.egress.temporal.peers) -}}
{{- fail "networkPolicy.egress.temporal: set cidrs or peers for the Temporal frontend (temporal.address is set)" -}}
{{- end -}}
{{- if and $v.temporal.address (not (include "breakglass.temporalPort" .)) -}}
{{- fail "networkPolicy.egress.temporal.port: temporal.address has no :port, set the port here" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The CIDRs an SSH endpoint may be reached at, as a YAML list: explicit networkPolicy CIDRs, else
the host itself when it is an IP literal, else (a DNS name) a failure naming the value to set.
An empty host renders no rule (the app refuses to start naming devvm.host / pve.host).
*/}}
{{- define "breakglass.sshCidrs" -}}
{{- $host := .endpoint.host -}}
{{- if .cidrs -}}
{{- toYaml .cidrs -}}
{{- else if regexMatch "^[0-9]{1,3}(\\.[0-9]{1,3}){3}$" $host -}}
{{- list (printf "%s/32" $host) | toYaml -}}
{{- else if regexMatch "^[0-9a-fA-F:]+:[0-9a-fA-F:.]*$" $host -}}
{{- list (printf "%s/128" $host) | toYaml -}}
{{- else if $host -}}
{{- fail (printf "networkPolicy.egress.%s.cidrs: required because %s.host (%s) is not an IP address" .name .name $host) -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* The Temporal frontend port: networkPolicy.egress.temporal.port, else the one in temporal.address. */}}
{{- define "breakglass.temporalPort" -}}
{{- $port := int .Values.networkPolicy.egress.temporal.port -}}
{{- if gt $port 0 -}}
{{- $port -}}
{{- else -}}
{{- regexFind "[0-9]+$" (regexFind ":[0-9]+$" .Values.temporal.address) -}}
{{- end -}}
{{- end -}}

{{/*
The application config (server/config.ts) as JSON. Only non-secret values: secrets are file
paths into read-only Secret mounts; operator tokens appear as sha256 hashes.
*/}}
{{- define "breakglass.configJson" -}}
{{- $v := .Values -}}
{{- $p := include "breakglass.paths" . | fromYaml -}}
{{- $temporal := dict "namespace" $v.temporal.namespace "taskQueue" $v.temporal.taskQueue -}}
{{- with $v.temporal.address }}{{ $_ := set $temporal "address" . }}{{ end -}}
{{- with $v.temporal.uiUrl }}{{ $_ := set $temporal "uiUrl" . }}{{ end -}}
{{- if include "breakglass.temporalTls" . -}}
{{- /* Every field present (null = not set): an empty object would read as "no TLS". */ -}}
{{- $tls := dict "caFile" nil "certFile" nil "keyFile" nil "serverName" nil -}}
{{- if and $v.temporal.tls.existingSecret $v.temporal.tls.items.ca }}{{ $_ := set $tls "caFile" $p.temporalCa }}{{ end -}}
{{- if include "breakglass.temporalMtls" . }}{{ $_ := set $tls "certFile" $p.temporalCert }}{{ $_ := set $tls "keyFile" $p.temporalKey }}{{ end -}}
{{- with $v.temporal.tls.serverName }}{{ $_ := set $tls "serverName" . }}{{ end -}}
{{- $_ := set $temporal "tls" $tls -}}
{{- end -}}
{{- if $v.temporal.apiKey.existingSecret }}{{ $_ := set $temporal "apiKeyFile" $p.temporalApiKey }}{{ end -}}
{{- /* One build at a time: each new build makes itself current (its build id comes by env). */ -}}
{{- if $v.versioning.enabled }}{{ $_ := set $temporal "deployment" (dict "name" $v.versioning.deploymentName "promote" true) }}{{ end -}}
{{- $endpoints := dict -}}
{{- range $name := list "devvm" "pve" -}}
{{- $e := index $v $name -}}
{{- $out := dict "port" (int $e.port) "user" $e.user "keyFile" (index $p (printf "%sKey" $name)) "fingerprints" $e.fingerprints -}}
{{- with $e.host }}{{ $_ := set $out "host" . }}{{ end -}}
{{- if $v.ssh.items.knownHosts }}{{ $_ := set $out "knownHostsFile" $p.knownHosts }}{{ end -}}
{{- $_ := set $endpoints $name $out -}}
{{- end -}}
{{- $proxy := dict "header" $v.auth.proxy.header "trustedCidrs" $v.auth.proxy.trustedCidrs "secretHeader" $v.auth.proxy.secretHeader -}}
{{- if and (eq $v.auth.mode "proxy") $v.auth.proxy.secret.existingSecret }}{{ $_ := set $proxy "secretFile" $p.proxySecret }}{{ end -}}
{{- $agent := dict "model" $v.agent.model "maxTokens" (int $v.agent.maxTokens) "maxContextTokens" (int $v.agent.maxContextTokens) -}}
{{- with $v.agent.baseUrl }}{{ $_ := set $agent "baseUrl" . }}{{ end -}}
{{- if $v.agent.apiKey.existingSecret }}{{ $_ := set $agent "apiKeyFile" $p.anthropicKey }}{{ end -}}
{{- $config := dict
  "listen" (dict "host" $v.listenHost "port" (int $v.port))
  "dataDir" $p.dataDir
  "temporal" $temporal
  "target" (dict "devvmName" $v.target.devvmName "vmid" (int $v.target.vmid))
  "devvm" $endpoints.devvm
  "pve" $endpoints.pve
  "agent" $agent
  "policy" (dict "mutatingVerbs" $v.policy.mutatingVerbs "devvmCommands" $v.policy.devvmCommands "toolCallsPerMessage" (int $v.policy.toolCallsPerMessage))
  "approvals" (dict "expiryMinutes" (int $v.approvals.expiryMinutes))
  "lease" (dict "holdMinutes" (int $v.lease.holdMinutes))
  "auth" (dict "mode" $v.auth.mode "tokens" $v.auth.tokens "proxy" $proxy "operators" $v.auth.operators)
-}}
{{- if $v.metrics.token.existingSecret }}{{ $_ := set $config "metrics" (dict "tokenFile" $p.metricsToken) }}{{ end -}}
{{- if $v.identity.existingSecret }}{{ $_ := set $config "identity" (dict "keyFile" $p.identityKey) }}{{ end -}}
{{- $codec := dict "enabled" $v.codec.enabled "compress" $v.codec.compress -}}
{{- if $v.codec.enabled -}}
{{- $keys := list -}}
{{- range $v.codec.keys }}{{ $keys = append $keys (dict "id" .id "file" (printf "%s/%s" $p.codecKeys .id)) }}{{ end -}}
{{- $_ := set $codec "keys" $keys -}}
{{- end -}}
{{- with $v.codec.webUiOrigins }}{{ $_ := set $codec "webUiOrigins" . }}{{ end -}}
{{- $_ := set $config "codec" $codec -}}
{{- if $v.recording.redactOutput }}{{ $_ := set $config "recording" (dict "redactOutput" true) }}{{ end -}}
{{- toPrettyJson $config -}}
{{- end -}}

{{/*
Pod template for one Deployment. Context: dict "root" $ "component" console|worker "roles" (list).
The worker role needs the SSH keys and the data volume; the server role the HTTP port and probes.
*/}}
{{- define "breakglass.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $p := include "breakglass.paths" $root | fromYaml -}}
{{- $serves := has "server" .roles -}}
{{- $works := has "worker" .roles -}}
{{- $resources := ternary $v.worker.resources $v.resources (eq .component "worker") -}}
{{- /* Only the pod serving the console authenticates the proxy and answers /metrics. */ -}}
{{- $proxySecret := and $serves (eq $v.auth.mode "proxy") $v.auth.proxy.secret.existingSecret -}}
{{- $metricsToken := and $serves $v.metrics.token.existingSecret -}}
metadata:
  labels:
    {{- include "breakglass.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "breakglass.configJson" $root | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "breakglass.serviceAccountName" $root }}
  # No Kubernetes API access: the console never talks to the API server.
  automountServiceAccountToken: false
  # No service-link environment variables (they could shadow config overrides).
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $v.securityContext.runAsUser }}
    runAsGroup: {{ $v.securityContext.runAsGroup }}
    fsGroup: {{ $v.securityContext.fsGroup }}
    fsGroupChangePolicy: OnRootMismatch
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: {{ ternary "worker" "breakglass" (eq .component "worker") }}
      image: {{ include "breakglass.image" $root | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      env:
        - name: BREAKGLASS_CONFIG
          value: {{ $p.config | quote }}
        - name: BREAKGLASS_ROLES
          value: {{ join "," .roles | quote }}
        - name: BREAKGLASS_DATA_DIR
          value: {{ $p.dataDir | quote }}
        - name: HOST
          value: {{ $v.listenHost | quote }}
        - name: PORT
          value: {{ $v.port | int | quote }}
        - name: LOG_LEVEL
          value: {{ $v.logLevel | quote }}
        {{- if $v.versioning.enabled }}
        - name: BREAKGLASS_BUILD_ID
          value: {{ include "breakglass.buildId" $root | quote }}
        {{- end }}
      {{- if $serves }}
      ports:
        - name: http
          containerPort: {{ $v.port | int }}
          protocol: TCP
      startupProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: {{ $v.probes.startup.periodSeconds }}
        failureThreshold: {{ $v.probes.startup.failureThreshold }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: {{ $v.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ $v.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: {{ $v.probes.readiness.periodSeconds }}
        timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
        failureThreshold: {{ $v.probes.readiness.failureThreshold }}
      {{- end }}
      {{- with $resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: {{ $v.securityContext.runAsUser }}
        runAsGroup: {{ $v.securityContext.runAsGroup }}
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        privileged: false
        capabilities:
          drop:
            - ALL
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: config
          mountPath: /etc/breakglass/config
          readOnly: true
        - name: tmp
          mountPath: /tmp
        - name: data
          mountPath: {{ $p.dataDir }}
        {{- if $works }}
        - name: ssh
          mountPath: /etc/breakglass/ssh
          readOnly: true
        {{- end }}
        {{- if $v.agent.apiKey.existingSecret }}
        - name: anthropic
          mountPath: /etc/breakglass/anthropic
          readOnly: true
        {{- end }}
        {{- if $v.temporal.tls.existingSecret }}
        - name: temporal-tls
          mountPath: /etc/breakglass/temporal-tls
          readOnly: true
        {{- end }}
        {{- if $v.temporal.apiKey.existingSecret }}
        - name: temporal-api-key
          mountPath: /etc/breakglass/temporal-api-key
          readOnly: true
        {{- end }}
        {{- if $proxySecret }}
        - name: proxy-secret
          mountPath: /etc/breakglass/proxy-secret
          readOnly: true
        {{- end }}
        {{- if $metricsToken }}
        - name: metrics-token
          mountPath: /etc/breakglass/metrics-token
          readOnly: true
        {{- end }}
        {{- if $v.identity.existingSecret }}
        - name: identity
          mountPath: /etc/breakglass/identity
          readOnly: true
        {{- end }}
        {{- if and $v.codec.enabled $v.codec.existingSecret }}
        - name: codec-keys
          mountPath: {{ $p.codecKeys }}
          readOnly: true
        {{- end }}
  volumes:
    - name: config
      {{- if $v.existingConfigSecret.name }}
      secret:
        secretName: {{ $v.existingConfigSecret.name }}
        defaultMode: 288 # 0440
        items:
          - key: {{ $v.existingConfigSecret.item }}
            path: config.json
      {{- else }}
      configMap:
        name: {{ include "breakglass.fullname" $root }}
        defaultMode: 292 # 0444
        items:
          - key: config.json
            path: config.json
      {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ $v.tmpSizeLimit }}
    - name: data
      {{- if and $works $v.persistence.enabled }}
      persistentVolumeClaim:
        claimName: {{ default (include "breakglass.fullname" $root) $v.persistence.existingClaim }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ $v.persistence.emptyDirSizeLimit }}
      {{- end }}
    {{- if $works }}
    - name: ssh
      secret:
        secretName: {{ $v.ssh.existingSecret }}
        defaultMode: 288 # 0440: owner root, group fsGroup; never world-readable
        items:
          - key: {{ $v.ssh.items.devvmPrivateKey }}
            path: devvm_key
          - key: {{ $v.ssh.items.pvePrivateKey }}
            path: pve_key
          {{- with $v.ssh.items.knownHosts }}
          - key: {{ . }}
            path: known_hosts
          {{- end }}
    {{- end }}
    {{- if $v.agent.apiKey.existingSecret }}
    - name: anthropic
      secret:
        secretName: {{ $v.agent.apiKey.existingSecret }}
        defaultMode: 288 # 0440
        items:
          - key: {{ $v.agent.apiKey.item }}
            path: api-key
    {{- end }}
    {{- with $v.temporal.tls }}
    {{- if .existingSecret }}
    - name: temporal-tls
      secret:
        secretName: {{ .existingSecret }}
        defaultMode: 288 # 0440
        items:
          {{- with .items.ca }}
          - key: {{ . }}
            path: ca.crt
          {{- end }}
          {{- if and .items.cert .items.key }}
          - key: {{ .items.cert }}
            path: tls.crt
          - key: {{ .items.key }}
            path: tls.key
          {{- end }}
    {{- end }}
    {{- end }}
    {{- if $v.temporal.apiKey.existingSecret }}
    - name: temporal-api-key
      secret:
        secretName: {{ $v.temporal.apiKey.existingSecret }}
        defaultMode: 288 # 0440
        items:
          - key: {{ $v.temporal.apiKey.item }}
            path: api-key
    {{- end }}
    {{- if $proxySecret }}
    - name: proxy-secret
      secret:
        secretName: {{ $v.auth.proxy.secret.existingSecret }}
        defaultMode: 288 # 0440
        items:
          - key: {{ $v.auth.proxy.secret.item }}
            path: secret
    {{- end }}
    {{- if $metricsToken }}
    - name: metrics-token
      secret:
        secretName: {{ $v.metrics.token.existingSecret }}
        defaultMode: 288 # 0440
        items:
          - key: {{ $v.metrics.token.item }}
            path: token
    {{- end }}
    {{- if $v.identity.existingSecret }}
    - name: identity
      secret:
        secretName: {{ $v.identity.existingSecret }}
        defaultMode: 288 # 0440
        items:
          - key: {{ $v.identity.item }}
            path: key
    {{- end }}
    {{- if and $v.codec.enabled $v.codec.existingSecret }}
    - name: codec-keys
      secret:
        secretName: {{ $v.codec.existingSecret }}
        defaultMode: 288 # 0440
        items:
          {{- range $v.codec.keys }}
          - key: {{ .item }}
            path: {{ .id }}
          {{- end }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
NetworkPolicy egress rules for a pod. Context: dict "root" $ "works" bool.
Everything not listed here is denied: DNS, the Temporal frontend, and (worker role) SSH to the
devvm and the PVE host and HTTPS to the model API.
*/}}
{{- define "breakglass.egressRules" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $e := $v.networkPolicy.egress -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $e.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml $e.dns.podLabels | nindent 10 }}
    {{- range $e.dns.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- if $v.temporal.address }}
- to:
    {{- range $e.temporal.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- with $e.temporal.peers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - protocol: TCP
      port: {{ include "breakglass.temporalPort" $root }}
{{- end }}
{{- if .works }}
{{- range $name := list "devvm" "pve" }}
{{- $cidrs := include "breakglass.sshCidrs" (dict "name" $name "endpoint" (index $v $name) "cidrs" (index $e $name).cidrs) | fromYamlArray }}
{{- if $cidrs }}
- to:
    {{- range $cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - protocol: TCP
      port: {{ (index $v $name).port | int }}
{{- end }}
{{- end }}
{{- if and $v.agent.apiKey.existingSecret $e.modelApi.cidrs }}
- to:
    {{- range $e.modelApi.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - protocol: TCP
      port: {{ $e.modelApi.port | int }}
{{- end }}
{{- end }}
{{- end -}}
