"""Entry point: `gunicorn wsgi:app`, and what `flask --app wsgi` finds."""
from messenger_app import create_app

app = create_app()
