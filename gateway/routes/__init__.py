"""HTTP routes, one module per area of the API. Each holds no RAG logic: one gRPC call per request."""
