# dust-mcp-bridge on Kubernetes: a namespace (optional), one Secret with every credential, and the
# Helm release of helm/dust-mcp-bridge that reads its environment from that Secret (existingSecret).
# Secrets never go into Helm values: Helm keeps values in the release, readable with `helm get values`.

locals {
  # The namespace as an attribute of the created resource when there is one, so the secret and the
  # release wait for it.
  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace
}

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name   = var.namespace
    labels = merge(local.common_labels, var.namespace_labels)
  }
}

resource "kubernetes_secret_v1" "this" {
  metadata {
    name      = local.secret_name
    namespace = local.namespace
    labels    = local.common_labels
  }

  type = "Opaque"
  # The provider base64-encodes `data`; the attribute is sensitive in plans and outputs.
  data = local.secret_data
}

resource "helm_release" "this" {
  name      = var.release_name
  namespace = local.namespace
  # The namespace is this module's (kubernetes_namespace_v1) or the caller's, never Helm's.
  create_namespace = false

  chart      = local.chart
  repository = local.from_repository ? var.chart_repository : null
  version    = local.from_repository ? var.chart_version : null

  # Module values first, the caller's extra values last (Helm deep-merges them in order).
  values = [
    yamlencode(local.values),
    yamlencode(var.extra_values),
  ]

  # existingSecret in the values names this Secret; it must exist before the pods start.
  depends_on = [kubernetes_secret_v1.this]

  atomic          = var.atomic
  wait            = var.wait
  timeout         = var.timeout_seconds
  cleanup_on_fail = var.atomic
  max_history     = 10

  lifecycle {
    precondition {
      condition     = !var.ingress_enabled || var.ingress_host != ""
      error_message = "ingress_enabled needs ingress_host."
    }
    precondition {
      condition     = var.clamav_mode != "external" || var.clamav_url != ""
      error_message = "clamav_mode = external needs clamav_url (tcp://host:port or unix:///path)."
    }
    precondition {
      condition     = var.autoscaling_max_replicas >= var.autoscaling_min_replicas
      error_message = "autoscaling_max_replicas must be at least autoscaling_min_replicas."
    }
    precondition {
      condition     = var.chart_repository == "" || var.chart_version != ""
      error_message = "chart_repository needs an exact chart_version (a repository chart is never installed unpinned)."
    }
    precondition {
      # Each pod has its own memory store: a second replica would not know the first one's handles.
      condition     = var.redis_url != "" || (!var.autoscaling_enabled && var.replicas == 1)
      error_message = "More than one replica (or autoscaling) needs redis_url: without Redis a conversation handle only works on the pod that made it."
    }
    precondition {
      # Workers share nothing in memory: what they must share (sessions, conversations, limits) is in Redis.
      condition     = var.redis_url != "" || try(tonumber(var.workers), 1) <= 1
      error_message = "More than one worker needs redis_url: the workers of a pod share sessions, conversations and limits through it."
    }
    precondition {
      condition     = (var.principal_header == "") == (length(var.principal_proxies) == 0)
      error_message = "principal_header and principal_proxies go together: the header in which the authenticating proxy names the user, and the proxy's addresses, the only peers whose header is believed."
    }
  }
}
