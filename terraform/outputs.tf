output "namespace" {
  description = "Namespace of the release and its secret."
  value       = helm_release.this.namespace
}

output "release_name" {
  description = "Helm release name."
  value       = helm_release.this.name
}

output "service_name" {
  description = "Name of the bridge's Service (the chart's fullname, passed as fullnameOverride)."
  value       = local.fullname
}

output "service_dns_name" {
  description = "In-cluster DNS name of the bridge's Service."
  value       = "${local.fullname}.${helm_release.this.namespace}.svc.${var.cluster_domain}"
}

output "secret_name" {
  description = "Name of the Secret holding DUST_API_KEY, DUST_WORKSPACE_ID, BRIDGE_API_KEYS, BRIDGE_METRICS_KEY, BRIDGE_STORE_ENCRYPTION_KEY and REDIS_URL (passed to the chart as existingSecret)."
  value       = kubernetes_secret_v1.this.metadata[0].name
}

output "chart_version" {
  description = "Version of the chart Helm installed (from the release metadata)."
  value       = helm_release.this.metadata.version
}

output "app_version" {
  description = "appVersion of the installed chart."
  value       = helm_release.this.metadata.app_version
}

output "service_url" {
  description = "In-cluster base URL of the bridge (MCP endpoint: <service_url>/mcp)."
  value       = "http://${local.fullname}.${helm_release.this.namespace}.svc.${var.cluster_domain}:${try(var.extra_values.service.port, 80)}"
}
