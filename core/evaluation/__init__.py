"""Measuring the detector: the evaluation protocol, shared feature extraction, training."""
