"""The pipeline: submit -> crop -> embed -> index -> classify -> alert.

Each stage is a plain function of (Services, ids). Stages read their inputs from
storage and write their outputs to storage, so the embedded runner can call them
in a loop and a Celery task can wrap each one unchanged.
"""
