"""Tests against real etcd, Redis and InfluxDB servers started on loopback."""
