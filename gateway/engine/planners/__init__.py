"""Who decides a session's next step: a base (base.py) and one module per planner."""
