"""Mixture-of-experts layers: batched FFN experts and every router the experiments compare."""
