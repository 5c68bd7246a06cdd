"""Channel adapters: each parses a client's message, runs the channel-neutral chat turn and renders its events."""
