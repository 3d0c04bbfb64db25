"""The HTTP ingest API (``idwatch api``): ``app.py`` builds the FastAPI app and serves it,
``auth.py`` checks API keys, ``labels.py`` cleans client-given names, ``models.py``
holds the response models."""

from workers.api.app import ApiConfigError, create_app, run
from workers.api.labels import clean_text, safe_filename, upload_label

__all__ = ["ApiConfigError", "clean_text", "create_app", "run", "safe_filename", "upload_label"]
