"""Encoder engines: our forwards of the SAM ViT and SAM2 Hiera image encoders over transformers' weights,
and their building blocks (attention windows, memory-lean residual steps)."""
