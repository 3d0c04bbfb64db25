"""The review workflow: a person confirms or dismisses each alert, and the system learns.

- ``states.py``: the review states and what each one means;
- ``actions.py``: set an alert's review (history row, the ``review`` event to the
  notifiers on confirmation);
- ``queue.py``: the review queue (filters, order, pages) and one alert's details;
- ``suppression.py``: the review history of a face, fed to the alert rule, so a face
  dismissed (or not this person) never alerts again for that person;
- ``explain.py``: the signals behind a score in words;
- ``evidence.py``: the evidence export for a takedown, with a signed manifest;
- ``users.py``: reviewers and their password hashes;
- ``thresholds.py``: a per-person threshold suggested from the reviews;
- ``feedback.py``: reviewed alerts as training rows for ``idwatch detector train``.

Nothing here imports Celery or the web framework; the pages are in
``workers/api/review``.
"""
