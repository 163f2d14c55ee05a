# Inputs of the dust-mcp-bridge module. Every validation block refers to its own variable only (a
# Terraform >= 1.5 requirement); the rules that tie two inputs together are preconditions on the
# helm_release in main.tf.

# --- Where it goes -------------------------------------------------------------------------------------

variable "namespace" {
  description = "Kubernetes namespace of the release and its secret (a DNS label: lower-case letters, digits and '-', at most 63 characters)."
  type        = string
  default     = "dust-mcp-bridge"

  validation {
    condition     = length(var.namespace) <= 63 && can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS label (RFC 1123): lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters."
  }
}

variable "create_namespace" {
  description = "Create the namespace (kubernetes_namespace_v1). false: it must already exist."
  type        = bool
  default     = true
}

variable "namespace_labels" {
  description = "Labels of the namespace when the module creates it. The default enforces the restricted Pod Security Standard, which the chart's pods meet."
  type        = map(string)
  default = {
    "pod-security.kubernetes.io/enforce" = "restricted"
  }
}

variable "labels" {
  description = "Extra labels on the namespace and the secret."
  type        = map(string)
  default     = {}
}

variable "release_name" {
  description = "Helm release name (a DNS label of at most 53 characters, Helm's limit). It also names the secret and, by the chart's fullname rule, the Service."
  type        = string
  default     = "dust-mcp-bridge"

  validation {
    condition     = length(var.release_name) <= 53 && can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.release_name))
    error_message = "release_name must be a DNS label of at most 53 characters."
  }
}

variable "cluster_domain" {
  description = "The cluster's DNS domain, used only to build the service_dns_name output."
  type        = string
  default     = "cluster.local"
}

# --- Which chart ------------------------------------------------------------------------------------------

variable "chart_path" {
  description = "Local path of the chart. Empty (default): the chart in this repository, <module>/../helm/dust-mcp-bridge. Ignored when chart_repository is set."
  type        = string
  default     = ""
}

variable "chart_repository" {
  description = "Helm repository URL (https:// or oci://) to install the chart from instead of a local path. Requires chart_version."
  type        = string
  default     = ""

  validation {
    condition     = var.chart_repository == "" || can(regex("^(https|oci)://", var.chart_repository))
    error_message = "chart_repository must be empty or start with https:// or oci://."
  }
}

variable "chart_name" {
  description = "Chart name in chart_repository."
  type        = string
  default     = "dust-mcp-bridge"
}

variable "chart_version" {
  description = "Exact chart version to install from chart_repository (required with it; a local chart installs the version in its Chart.yaml)."
  type        = string
  default     = ""

  validation {
    condition     = var.chart_version == "" || can(regex("^v?[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.+-]+)?$", var.chart_version))
    error_message = "chart_version must be empty or an exact SemVer version such as 1.2.3."
  }
}

# --- What runs --------------------------------------------------------------------------------------------

variable "image_repository" {
  description = "Container image repository. Empty: the chart's default."
  type        = string
  default     = ""
}

variable "image_tag" {
  description = "Container image tag to run (required: pin the version you deploy)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a non-empty image tag: letters, digits, '_', '.', '-', at most 128 characters, not starting with '.' or '-'."
  }
}

variable "replicas" {
  description = "Number of bridge pods (replicaCount) when autoscaling is off. More than one needs redis_url (a precondition checks it): without Redis each pod has its own conversation store."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 1 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number of at least 1."
  }
}

variable "workers" {
  description = "Worker processes per pod (the chart's workers -> BRIDGE_WORKERS): \"\" or \"auto\" (default) = one per CPU of the container's CPU limit with redis_url, else 1; or a number from 1 to 256. More than one needs redis_url (a precondition checks it): the workers share sessions, conversations and limits through it. Give the pods the CPU and memory for them (extra_values: resources; the chart README, \"Workers and CPU\")."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "auto"], var.workers) || try(tonumber(var.workers) >= 1 && tonumber(var.workers) <= 256 && can(regex("^[1-9][0-9]*$", var.workers)), false)
    error_message = "workers must be empty, auto, or a whole number from 1 to 256."
  }
}

# --- Dust and the bridge's secrets (all end up in one Kubernetes Secret, never in Helm values) ------------

variable "dust_api_key" {
  description = "Dust API key (DUST_API_KEY; Dust: Admin > API keys)."
  type        = string
  sensitive   = true

  validation {
    condition     = trimspace(var.dust_api_key) != ""
    error_message = "dust_api_key must not be empty."
  }
}

variable "dust_workspace_id" {
  description = "Dust workspace id (DUST_WORKSPACE_ID: the part after /w/ in the Dust URL)."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]+$", var.dust_workspace_id))
    error_message = "dust_workspace_id must be a non-empty workspace id (letters, digits, '_' and '-')."
  }
}

variable "dust_base_url" {
  description = "Dust region (DUST_BASE_URL): https://dust.tt or https://eu.dust.tt. Not secret: passed as dust.baseUrl."
  type        = string
  default     = "https://dust.tt"

  validation {
    condition     = can(regex("^https://[^/?#\\s]+", var.dust_base_url))
    error_message = "dust_base_url must start with https:// and name a host, e.g. https://eu.dust.tt."
  }
}

variable "bridge_api_keys" {
  description = "Client keys (BRIDGE_API_KEYS): entries name:sha256hex[:rate=N/period][:concurrency=N] from `dust-mcp-bridge keys new NAME`. Empty: no key required, which is only safe when nothing outside the cluster reaches the bridge."
  type        = list(string)
  default     = []
  sensitive   = true

  validation {
    condition = alltrue([
      for entry in var.bridge_api_keys :
      can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}:[0-9a-fA-F]{64}(:(rate|concurrency)=[^:]+)*$", entry))
    ])
    error_message = "Every bridge_api_keys entry must be name:sha256hex[:rate=N/period][:concurrency=N] (make one with `dust-mcp-bridge keys new NAME`)."
  }
}

variable "metrics_key" {
  description = "Bearer key protecting /metrics (BRIDGE_METRICS_KEY). Empty: /metrics is open inside the cluster."
  type        = string
  default     = ""
  sensitive   = true
}

variable "store_encryption_key" {
  description = "Fernet key(s) encrypting what is kept in Redis (BRIDGE_STORE_ENCRYPTION_KEY), comma-separated, newest first; `dust-mcp-bridge keys new-store-key` makes one. Empty: stored as plain JSON."
  type        = string
  default     = ""
  sensitive   = true
}

variable "redis_url" {
  description = "Conversation and upload store (REDIS_URL): redis:// or rediss:// (TLS), redis+sentinel:// or redis+cluster:// (rediss+ for TLS), unix://; e.g. rediss://:password@redis:6380/0. Kept in the secret because it may carry a password. With Sentinel add its port to the chart's NetworkPolicy (extra_values: redis.ports = [6379, 26379]). Empty: per-pod memory store (handles do not survive restarts or cross replicas)."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    # The schemes the bridge itself accepts (bridge/store/connection.py): anything else fails at start-up.
    condition     = var.redis_url == "" || can(regex("^(rediss?|rediss?\\+sentinel|rediss?\\+cluster|unix)://", var.redis_url))
    error_message = "redis_url must be empty or start with redis://, rediss://, redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster:// or unix:// (the schemes the bridge accepts)."
  }
}

# --- Virus scanning ---------------------------------------------------------------------------------------

variable "clamav_mode" {
  description = "How uploads are scanned: sidecar (a clamd container in every pod), external (an existing clamd at clamav_url) or off (no scanning: BRIDGE_SCAN_MODE=off, every upload says scan: skipped)."
  type        = string
  default     = "sidecar"

  validation {
    condition     = contains(["sidecar", "external", "off"], var.clamav_mode)
    error_message = "clamav_mode must be one of sidecar, external, off."
  }
}

variable "clamav_url" {
  description = "clamd address when clamav_mode = external (CLAMD_URL): tcp://host:port or unix:///path."
  type        = string
  default     = ""

  validation {
    condition     = var.clamav_url == "" || can(regex("^(tcp://[^/:]+:[0-9]+|unix:///.+)$", var.clamav_url))
    error_message = "clamav_url must be empty, tcp://host:port or unix:///path/to/clamd.sock."
  }
}

# --- Exposure ---------------------------------------------------------------------------------------------

variable "ingress_enabled" {
  description = "Create an Ingress for ingress_host."
  type        = bool
  default     = false
}

variable "ingress_host" {
  description = "Public host name of the bridge (required with ingress_enabled). The chart adds it to BRIDGE_ALLOWED_HOSTS (the DNS-rebinding guard)."
  type        = string
  default     = ""

  validation {
    condition     = var.ingress_host == "" || (length(var.ingress_host) <= 253 && can(regex("^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.ingress_host)))
    error_message = "ingress_host must be empty or a lower-case DNS name such as bridge.example.com."
  }
}

variable "ingress_class_name" {
  description = "IngressClass of the Ingress. Empty: the cluster's default class."
  type        = string
  default     = ""
}

variable "ingress_tls_secret_name" {
  description = "TLS secret (kubernetes.io/tls) for ingress_host, e.g. one cert-manager issues. Empty: no TLS section (only when TLS terminates in front of the Ingress, e.g. at a cloud load balancer)."
  type        = string
  default     = ""
}

variable "ingress_annotations" {
  description = "Ingress annotations (e.g. cert-manager.io/cluster-issuer), merged key by key over the chart's defaults (ingress-nginx: no buffering, one-hour timeouts for streaming answers)."
  type        = map(string)
  default     = {}
}

variable "allowed_hosts" {
  description = "Further Host header values to accept (config.allowedHosts -> BRIDGE_ALLOWED_HOSTS). The chart always adds the Service's DNS names and the ingress host."
  type        = list(string)
  default     = []
}

# --- Scaling and monitoring -------------------------------------------------------------------------------

variable "autoscaling_enabled" {
  description = "Let a HorizontalPodAutoscaler size the Deployment (replicas is then ignored). Needs redis_url."
  type        = bool
  default     = false
}

variable "autoscaling_min_replicas" {
  description = "HPA minimum replicas."
  type        = number
  default     = 2

  validation {
    condition     = var.autoscaling_min_replicas >= 1 && floor(var.autoscaling_min_replicas) == var.autoscaling_min_replicas
    error_message = "autoscaling_min_replicas must be a whole number of at least 1."
  }
}

variable "autoscaling_max_replicas" {
  description = "HPA maximum replicas (at least autoscaling_min_replicas)."
  type        = number
  default     = 10

  validation {
    condition     = var.autoscaling_max_replicas >= 1 && floor(var.autoscaling_max_replicas) == var.autoscaling_max_replicas
    error_message = "autoscaling_max_replicas must be a whole number of at least 1."
  }
}

variable "autoscaling_target_cpu_percent" {
  description = "HPA target average CPU utilisation, percent."
  type        = number
  default     = 70

  validation {
    condition     = var.autoscaling_target_cpu_percent >= 1 && var.autoscaling_target_cpu_percent <= 100
    error_message = "autoscaling_target_cpu_percent must be between 1 and 100."
  }
}

variable "service_monitor_enabled" {
  description = "Create a Prometheus Operator ServiceMonitor (needs the monitoring.coreos.com CRDs)."
  type        = bool
  default     = false
}

variable "prometheus_rule_enabled" {
  description = "Create the chart's PrometheusRule alerts (needs the monitoring.coreos.com CRDs)."
  type        = bool
  default     = false
}

# --- Bridge settings --------------------------------------------------------------------------------------

variable "shutdown_grace_seconds" {
  description = "BRIDGE_SHUTDOWN_GRACE_SECONDS: on SIGTERM, how long answers in flight may finish (the chart sets the pod's termination grace 10 s above it)."
  type        = number
  default     = 30

  validation {
    condition     = var.shutdown_grace_seconds >= 0 && var.shutdown_grace_seconds <= 3600 && floor(var.shutdown_grace_seconds) == var.shutdown_grace_seconds
    error_message = "shutdown_grace_seconds must be a whole number from 0 to 3600."
  }
}

variable "log_level" {
  description = "BRIDGE_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], upper(var.log_level))
    error_message = "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL."
  }
}

variable "extra_values" {
  description = "Further chart values, deep-merged over the ones this module sets (Helm merges the values documents in order; later wins). Never put secrets here: Helm stores values in the release."
  type        = any
  default     = {}
}

variable "redis_max_connections" {
  description = "BRIDGE_REDIS_MAX_CONNECTIONS: Redis connections per worker process (each command holds one for a round trip only); a pod opens up to workers times this many."
  type        = number
  default     = 128

  validation {
    condition     = var.redis_max_connections >= 1 && var.redis_max_connections <= 10000 && floor(var.redis_max_connections) == var.redis_max_connections
    error_message = "redis_max_connections must be a whole number from 1 to 10000."
  }
}

variable "redis_idle_seconds" {
  description = "BRIDGE_REDIS_IDLE_SECONDS: a Redis connection unused this long is closed."
  type        = number
  default     = 60

  validation {
    condition     = var.redis_idle_seconds > 0 && var.redis_idle_seconds <= 86400
    error_message = "redis_idle_seconds must be above 0 and at most 86400."
  }
}

variable "redis_pool_timeout_seconds" {
  description = "BRIDGE_REDIS_POOL_TIMEOUT_SECONDS: how long a command waits for a free Redis connection before the store answers that Redis is busy."
  type        = number
  default     = 2

  validation {
    condition     = var.redis_pool_timeout_seconds > 0 && var.redis_pool_timeout_seconds <= 60
    error_message = "redis_pool_timeout_seconds must be above 0 and at most 60."
  }
}

variable "principal_header" {
  description = "BRIDGE_PRINCIPAL_HEADER: the header in which an authenticating proxy in front (oauth2-proxy, the ingress's auth-url) names the signed-in user, e.g. X-Auth-Request-Email; each user is then a principal of their own. Empty: off. Needs principal_proxies (a precondition checks it)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[!#$%&'*+.^_`|~0-9A-Za-z-]{0,128}$", var.principal_header))
    error_message = "principal_header must be empty or an HTTP header name, e.g. X-Auth-Request-Email."
  }
}

variable "principal_proxies" {
  description = "BRIDGE_PRINCIPAL_PROXIES: the addresses or networks that connect to the bridge on the authenticating proxy's behalf (the ingress controller's or oauth2-proxy's pods), the only peers whose principal_header is believed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for proxy in var.principal_proxies : can(regex("^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$", proxy)) && !can(regex("/0+$", proxy))])
    error_message = "principal_proxies must be IP addresses or networks (10.0.0.0/8, fd00::/8), never one that trusts every address (/0)."
  }
}

# --- How Helm applies it ----------------------------------------------------------------------------------

variable "atomic" {
  description = "Roll the release back if an install or upgrade fails (helm --atomic)."
  type        = bool
  default     = true
}

variable "wait" {
  description = "Wait until the pods are ready before the release counts as deployed."
  type        = bool
  default     = true
}

variable "timeout_seconds" {
  description = "How long Helm waits for each Kubernetes operation, seconds."
  type        = number
  default     = 600

  validation {
    condition     = var.timeout_seconds >= 1 && var.timeout_seconds <= 3600 && floor(var.timeout_seconds) == var.timeout_seconds
    error_message = "timeout_seconds must be a whole number from 1 to 3600."
  }
}
