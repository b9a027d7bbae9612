"""HTTP blueprints: each validates input, calls the domain layer and shapes the response."""
from flask import current_app


def edge():
    """The app's domain objects (settings, catalog, manager, chats, generator)."""
    return current_app.extensions["edge_server"]
