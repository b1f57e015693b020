"""Hookflow's engine: everything but the Azure Functions adapters.

Nothing in this package imports ``azure.functions``: the same engine is driven by the HTTP
functions, the timer, the tests and the benchmarks.
"""

__version__ = "0.1.0"
