variable "kubeconfig_path" {
  description = "kubeconfig file the helm and kubernetes providers use."
  type        = string
  default     = "~/.kube/config"
}

variable "kubeconfig_context" {
  description = "Context in kubeconfig_path. Empty: its current context."
  type        = string
  default     = ""
}

variable "image_tag" {
  description = "dust-mcp-bridge image tag to deploy."
  type        = string
}

variable "dust_api_key" {
  description = "Dust API key (Admin > API keys). Pass it as TF_VAR_dust_api_key, never in a committed file."
  type        = string
  sensitive   = true
}

variable "dust_workspace_id" {
  description = "Dust workspace id (the part after /w/ in the Dust URL)."
  type        = string
  sensitive   = true
}

variable "bridge_api_keys" {
  description = "Client key entries (name:sha256hex) from `dust-mcp-bridge keys new NAME`."
  type        = list(string)
  sensitive   = true
}

variable "redis_url" {
  description = "Redis for conversations shared by the replicas, e.g. rediss://:password@redis.example.internal:6380/0."
  type        = string
  sensitive   = true
}

variable "ingress_host" {
  description = "Public host name of the bridge, e.g. bridge.example.com."
  type        = string
}

variable "ingress_tls_secret_name" {
  description = "kubernetes.io/tls secret for ingress_host (e.g. issued by cert-manager)."
  type        = string
  default     = "dust-mcp-bridge-tls"
}
