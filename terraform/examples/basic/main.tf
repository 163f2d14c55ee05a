# The smallest production-shaped use of the module: two replicas sharing Redis, an Ingress with TLS,
# client keys required, ClamAV as a sidecar. The chart comes from this repository (the module's
# default chart path).

provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kubeconfig_context != "" ? var.kubeconfig_context : null
}

provider "helm" {
  kubernetes = {
    config_path    = var.kubeconfig_path
    config_context = var.kubeconfig_context != "" ? var.kubeconfig_context : null
  }
}

module "dust_mcp_bridge" {
  source = "../.."

  namespace = "dust-mcp-bridge"
  image_tag = var.image_tag
  replicas  = 2

  dust_api_key      = var.dust_api_key
  dust_workspace_id = var.dust_workspace_id
  bridge_api_keys   = var.bridge_api_keys
  redis_url         = var.redis_url

  ingress_enabled         = true
  ingress_host            = var.ingress_host
  ingress_class_name      = "nginx"
  ingress_tls_secret_name = var.ingress_tls_secret_name
  # The chart's ingress-nginx defaults (no buffering, one-hour timeouts) suit streamed answers;
  # ingress_annotations adds to them, e.g. "cert-manager.io/cluster-issuer" = "letsencrypt".

  clamav_mode = "sidecar"
}
