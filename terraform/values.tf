# What the module hands to Kubernetes and Helm, as a pure function of the variables: nothing here
# refers to a resource, so the tests can evaluate this file offline with variables.tf alone (see
# tests/deploy/test_terraform.py) and check the rendered values against the chart.

locals {
  common_labels = merge(var.labels, {
    "app.kubernetes.io/name"       = "dust-mcp-bridge"
    "app.kubernetes.io/instance"   = var.release_name
    "app.kubernetes.io/managed-by" = "terraform"
  })

  secret_name = "${var.release_name}-env"

  from_repository = var.chart_repository != ""
  chart           = local.from_repository ? var.chart_name : (var.chart_path != "" ? var.chart_path : "${path.module}/../helm/dust-mcp-bridge")

  # The chart's fullname rule (as `helm create`): the release name when it already contains the chart
  # name, else <release>-<chart>. It is also passed as fullnameOverride, so the Service has this name
  # whatever the chart's helper does.
  fullname = length(regexall("dust-mcp-bridge", var.release_name)) > 0 ? var.release_name : substr("${var.release_name}-dust-mcp-bridge", 0, 63)

  # Environment variable name => value. The chart takes the whole Secret as environment (envFrom);
  # every key is always present, so a secretKeyRef on any of them cannot fail either.
  secret_data = {
    DUST_API_KEY                = var.dust_api_key
    DUST_WORKSPACE_ID           = var.dust_workspace_id
    BRIDGE_API_KEYS             = join(",", var.bridge_api_keys)
    BRIDGE_METRICS_KEY          = var.metrics_key
    BRIDGE_STORE_ENCRYPTION_KEY = var.store_encryption_key
    REDIS_URL                   = var.redis_url
  }

  # Whether an optional credential is set is not itself a secret (it decides chart features).
  redis_enabled   = nonsensitive(var.redis_url != "")
  metrics_key_set = nonsensitive(var.metrics_key != "")

  # Environment from a Secret is read once at container start: this checksum, a pod annotation,
  # rolls the pods when a credential changes. Helm keeps it in the release, which lives in a Secret
  # of the same namespace: whoever can read it can read the credentials' Secret anyway.
  secret_checksum = nonsensitive(sha256(jsonencode(local.secret_data)))

  values = {
    fullnameOverride = local.fullname
    replicaCount     = var.replicas
    workers          = var.workers

    image = merge(
      { tag = var.image_tag },
      var.image_repository != "" ? { repository = var.image_repository } : {},
    )

    podAnnotations = {
      "checksum/terraform-secret" = local.secret_checksum
    }

    # Credentials come from the Secret; the inline values stay empty, so no secret is in the release.
    existingSecret = local.secret_name
    dust = {
      apiKey      = ""
      workspaceId = ""
      baseUrl     = var.dust_base_url
    }
    # REDIS_URL stays in the Secret (it may carry a password); naming it as redis.existingSecret
    # also tells the chart that Redis is in use (its NetworkPolicy then opens the Redis ports).
    redis = {
      url               = ""
      existingSecret    = local.redis_enabled ? local.secret_name : ""
      existingSecretKey = "REDIS_URL"
    }

    config = {
      demo                 = "off" # a missing credential is a start-up error, never a silent demo
      logLevel             = upper(var.log_level)
      shutdownGraceSeconds = var.shutdown_grace_seconds
      allowedHosts         = var.allowed_hosts # the chart adds the ingress hosts and the service names
      scanMode             = var.clamav_mode == "off" ? "off" : "required"
      # Each worker's own pool of Redis connections.
      redisMaxConnections     = var.redis_max_connections
      redisIdleSeconds        = var.redis_idle_seconds
      redisPoolTimeoutSeconds = var.redis_pool_timeout_seconds
      principalHeader         = var.principal_header
      principalProxies        = var.principal_proxies
    }

    clamav = {
      sidecar = {
        enabled = var.clamav_mode == "sidecar"
      }
      url = var.clamav_mode == "external" ? var.clamav_url : ""
    }

    # Only annotations the caller gives: the chart's defaults (no buffering, long timeouts for SSE)
    # stay unless overridden key by key.
    ingress = merge(length(var.ingress_annotations) > 0 ? { annotations = var.ingress_annotations } : {}, {
      enabled   = var.ingress_enabled
      className = var.ingress_class_name
      hosts = var.ingress_enabled ? [{
        host  = var.ingress_host
        paths = [{ path = "/", pathType = "Prefix" }]
      }] : []
      tls = var.ingress_enabled && var.ingress_tls_secret_name != "" ? [{
        secretName = var.ingress_tls_secret_name
        hosts      = [var.ingress_host]
      }] : []
    })

    autoscaling = {
      enabled                        = var.autoscaling_enabled
      minReplicas                    = var.autoscaling_min_replicas
      maxReplicas                    = var.autoscaling_max_replicas
      targetCPUUtilizationPercentage = var.autoscaling_target_cpu_percent
    }

    serviceMonitor = {
      enabled = var.service_monitor_enabled
      # With existingSecret the chart cannot know where the metrics key is: point it at ours.
      bearerTokenSecret = {
        name = local.metrics_key_set ? local.secret_name : ""
        key  = local.metrics_key_set ? "BRIDGE_METRICS_KEY" : ""
      }
    }
    prometheusRule = {
      enabled = var.prometheus_rule_enabled
    }
  }
}
