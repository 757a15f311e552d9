"""What the engine's actions refuse, as the API answers it."""


class StartError(Exception):
    """The instance cannot start (a missing or unapproved version, a quota)."""


class StateConflict(Exception):
    """The instance's state does not allow the action (HTTP 409)."""
