"""Quantize stage: the int8 single-step model (and optional window model)."""
