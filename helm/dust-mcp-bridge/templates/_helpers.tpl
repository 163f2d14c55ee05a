{{/* Names --------------------------------------------------------------------------------------- */}}

{{- define "dust-mcp-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dust-mcp-bridge.fullname" -}}
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

{{- define "dust-mcp-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dust-mcp-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dust-mcp-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dust-mcp-bridge.labels" -}}
helm.sh/chart: {{ include "dust-mcp-bridge.chart" . }}
{{ include "dust-mcp-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dust-mcp-bridge
{{- end -}}

{{- define "dust-mcp-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dust-mcp-bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dust-mcp-bridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the pods load: the chart's own, or existingSecret. */}}
{{- define "dust-mcp-bridge.secretName" -}}
{{- default (include "dust-mcp-bridge.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* Values ---------------------------------------------------------------------------------------- */}}

{{/* A number as the bridge reads it: integers without a decimal point or exponent (Helm holds
     numbers as float64, and 52428800 would otherwise print as 5.24288e+07). */}}
{{- define "dust-mcp-bridge.num" -}}
{{- $v := float64 . -}}
{{- if eq $v (floor $v) -}}{{- printf "%.0f" $v -}}{{- else -}}{{- printf "%g" $v -}}{{- end -}}
{{- end -}}

{{/* BRIDGE_WORKERS: the count (a number, or digits as a string), or auto for an empty `workers`. */}}
{{- define "dust-mcp-bridge.workers" -}}
{{- if kindIs "string" .Values.workers -}}
{{- default "auto" .Values.workers -}}
{{- else -}}
{{- include "dust-mcp-bridge.num" .Values.workers -}}
{{- end -}}
{{- end -}}

{{/* "true" when the Redis URL carries a password (user:password@host or ?password=). */}}
{{- define "dust-mcp-bridge.redisUrlIsSecret" -}}
{{- if and .Values.redis.url (or (regexMatch "^[a-z+]+://[^/]*@" .Values.redis.url) (regexMatch "[?&]password=" .Values.redis.url)) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the pods get a REDIS_URL at all. */}}
{{- define "dust-mcp-bridge.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "dust-mcp-bridge.clamdUrl" -}}
{{- if .Values.clamav.sidecar.enabled -}}
unix:///run/clamav/clamd.sock
{{- else -}}
{{- .Values.clamav.url -}}
{{- end -}}
{{- end -}}

{{/* BRIDGE_ALLOWED_HOSTS: the service's DNS names, the ingress hosts and config.allowedHosts,
     each bare and with any port. */}}
{{- define "dust-mcp-bridge.allowedHosts" -}}
{{- $svc := include "dust-mcp-bridge.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) -}}
{{- if .Values.ingress.enabled -}}
{{- range .Values.ingress.hosts -}}
{{- $hosts = append $hosts .host -}}
{{- end -}}
{{- end -}}
{{- $out := list -}}
{{- range $hosts -}}
{{- $out = append $out . -}}
{{- $out = append $out (printf "%s:*" .) -}}
{{- end -}}
{{- concat $out .Values.config.allowedHosts | uniq | join "," -}}
{{- end -}}

{{/* Resource quantities for the PrometheusRule: CPU in cores, memory in bytes ("" when unset). */}}
{{- define "dust-mcp-bridge.cpuCores" -}}
{{- with . -}}
{{- $v := toString . -}}
{{- if hasSuffix "m" $v -}}
{{- divf (trimSuffix "m" $v | float64) 1000 | printf "%g" -}}
{{- else -}}
{{- float64 $v | printf "%g" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dust-mcp-bridge.memoryBytes" -}}
{{- with . -}}
{{- $v := toString . -}}
{{- $units := dict "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- $bytes := "" -}}
{{- range $suffix, $mult := $units -}}
{{- if and (not $bytes) (hasSuffix $suffix $v) -}}
{{- $bytes = mulf (trimSuffix $suffix $v | float64) $mult | printf "%.0f" -}}
{{- end -}}
{{- end -}}
{{- default (float64 $v | printf "%.0f") $bytes -}}
{{- end -}}
{{- end -}}

{{/* Checks that the schema cannot express; each stops the render with one clear line. */}}
{{- define "dust-mcp-bridge.validate" -}}
{{- $v := .Values -}}
{{- if $v.existingSecret -}}
{{- if or $v.dust.apiKey $v.dust.workspaceId $v.auth.apiKeys $v.auth.metricsKey $v.redis.encryptionKeys -}}
{{- fail "dust-mcp-bridge: existingSecret replaces the chart's Secret: put DUST_API_KEY, DUST_WORKSPACE_ID, BRIDGE_API_KEYS, BRIDGE_METRICS_KEY and BRIDGE_STORE_ENCRYPTION_KEY in it instead of dust.apiKey, dust.workspaceId, auth.* and redis.encryptionKeys" -}}
{{- end -}}
{{- else if and (not $v.dust.apiKey) (ne (toString $v.config.demo) "on") -}}
{{- fail "dust-mcp-bridge: a Dust API key is required: set dust.apiKey (and dust.workspaceId), or existingSecret naming a Secret with DUST_API_KEY and DUST_WORKSPACE_ID" -}}
{{- else if and $v.dust.apiKey (not $v.dust.workspaceId) -}}
{{- fail "dust-mcp-bridge: dust.workspaceId is required with dust.apiKey (the part after /w/ in your Dust URL)" -}}
{{- end -}}
{{- if and $v.ingress.enabled (not $v.ingress.hosts) -}}
{{- fail "dust-mcp-bridge: ingress.enabled needs at least one entry in ingress.hosts" -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- fail "dust-mcp-bridge: autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and (gt (atoi (include "dust-mcp-bridge.workers" .)) 1) (not (include "dust-mcp-bridge.redisEnabled" .)) -}}
{{- fail "dust-mcp-bridge: workers above 1 needs redis.url (or redis.existingSecret): the workers share sessions, conversations and limits through Redis; leave workers empty (auto: 1 without Redis) or set it to 1" -}}
{{- end -}}
{{- if and $v.config.principalHeader (not $v.config.principalProxies) -}}
{{- fail "dust-mcp-bridge: config.principalHeader needs config.principalProxies: the addresses of the authenticating proxy (e.g. the ingress controller's pod network), the only peers whose header is believed" -}}
{{- end -}}
{{- if and $v.config.principalProxies (not $v.config.principalHeader) -}}
{{- fail "dust-mcp-bridge: config.principalProxies has no effect without config.principalHeader (the header in which the proxy names the user, e.g. X-Auth-Request-Email)" -}}
{{- end -}}
{{- if and $v.config.oauthIssuer $v.config.oauthAudience (not $v.config.publicUrl) -}}
{{- fail "dust-mcp-bridge: OAuth (config.oauthIssuer and config.oauthAudience) needs config.publicUrl, e.g. https://bridge.example.com" -}}
{{- end -}}
{{- end -}}
