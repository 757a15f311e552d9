"""What the engine's actions refuse, as the API answers it."""


class StartError(Exception):
    """The instance cannot start (a missing or unapproved version, a quota)."""


class StateConflict(Exception):
    """The instance's state does not allow the action (HTTP 409)."""


class RestartRefused(ValueError):
    """A restart's request names what the instance cannot do (HTTP 422 naming `field`)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
