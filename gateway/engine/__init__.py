"""The envelope engine: agent sessions the gateway runs for its callers, in which a model
decides (envelopes.py) and only the engine acts, through the call service."""
