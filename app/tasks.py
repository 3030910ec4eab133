"""The Celery entry point: `celery -A app.tasks worker` / `celery -A app.tasks beat`."""

from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]

# Register every domain's tasks with the worker.
import app.actions.letter_tasks  # noqa: E402
import app.actions.tasks  # noqa: E402
import app.mailings.event_tasks  # noqa: E402
import app.supporters.tasks  # noqa: E402,F401
