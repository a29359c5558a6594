"""damage-rig runtime: config, capture, inference, decisions, divert link, events, CLI."""

__version__ = "0.1.0"
