"""Test support: real loopback services and clients used by integration and e2e tests."""
