"""The HTTP face: problem+json, the OpenAPI description, the uploads route, and one module per middleware."""
