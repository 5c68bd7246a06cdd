"""Database layer: engine and sessions, declarative base, tenancy helpers, models (``app.db.models as m``)."""
