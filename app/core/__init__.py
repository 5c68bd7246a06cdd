"""Bottom layer: settings, domain errors, secrets (SecretBox), value checks, text helpers, embedded servers."""
