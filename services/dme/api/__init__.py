"""The DME's gRPC services: one servicer class, registered under every service name."""
