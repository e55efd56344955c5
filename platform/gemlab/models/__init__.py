"""Models whose FFNs or heads are MoE layers: a V-MoE-style ViT and a ResNet-18 with expert heads."""
