"""Sweeps on Ray Tune: search spaces expanded into trials (:mod:`.space`), each trial a training run (:mod:`.sweep`)."""
