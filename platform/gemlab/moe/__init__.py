"""Mixture-of-experts layers: per-expert FFNs and every router the experiments compare."""
