"""The Controller's HTTP front ends: the REST gateway to its gRPC API and the CAMARA NBI."""
