"""The HTTP gateway: REST and server-sent events over the gRPC services, plus the browser demo."""
