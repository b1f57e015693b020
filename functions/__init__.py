"""Thin Azure Functions adapters: parse the request, call ``shared``, map the result."""
