"""The platform's daemons, one package each; they talk to each other only over gRPC."""
