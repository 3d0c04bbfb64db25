"""Forgery detectors: score how likely a face claiming an identity is fake."""
