"""The coach's HTTP API (`/api/v1/…`), one module per resource; controllers parse, authorise, call a service."""
