output "service_dns_name" {
  description = "In-cluster DNS name of the bridge."
  value       = module.dust_mcp_bridge.service_dns_name
}

output "chart_version" {
  description = "Installed chart version."
  value       = module.dust_mcp_bridge.chart_version
}

output "secret_name" {
  description = "Secret holding the bridge's credentials."
  value       = module.dust_mcp_bridge.secret_name
}
