"""`wav2lip serve`: a page and an HTTP API for lip-sync jobs, the models loaded once.

Needs the `serve` extra (`pip install 'wav2lip[serve]'`: FastAPI, uvicorn, python-multipart).
`jobs` holds the job folders and the worker queue, `form` the streamed multipart upload and the
option fields, `app` the routes; `static/` is the page (plain HTML, CSS and JS, no build step).
"""
from .app import create_app
from .jobs import Job, JobQueue, Models, QueueFull

__all__ = ["Job", "JobQueue", "Models", "QueueFull", "create_app"]
