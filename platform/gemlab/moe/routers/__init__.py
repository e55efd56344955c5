"""Routers, one module per family. Each returns a ``Routing`` and exposes ``num_experts``."""
