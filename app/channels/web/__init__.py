"""The web channel: the widget's REST and WebSocket chat, feedback and widget pages."""
