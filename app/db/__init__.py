"""Database layer: engine and tenant sessions, declarative base, background job names and queue."""
