"""Multi-domain data: domains, their mixture and sampler, readers and generators."""
