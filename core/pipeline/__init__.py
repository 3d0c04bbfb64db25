"""The pipeline: the stages of the flow (``core.flow``) and what feeds and watches it.

Each stage is a plain function of (Services, id) returning the ids for the next stage.
Stages read their inputs from storage and write their outputs to storage, so the
in-process dispatcher can call them one after the other and a Celery task can wrap
each one unchanged.
"""
