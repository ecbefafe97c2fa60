"""Entry point: `gunicorn wsgi:app`, and what `flask --app wsgi` finds."""
import gc

from messenger_app import create_app

app = create_app()
# What exists now lives as long as the process: keeping it out of the garbage collector's
# full collections shortens their pauses (the tail of the latency).
gc.freeze()
