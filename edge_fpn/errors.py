"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""


class EdgeFpnError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class BackendInputError(EdgeFpnError, ValueError):
    """An engine was given inputs it cannot take (a name, shape or type); still a ValueError."""


class OptionError(EdgeFpnError, ValueError):
    """An option out of its range (a training run's, say): one line for the CLI, still a ValueError."""


class BackendStateError(EdgeFpnError, RuntimeError):
    """An engine cannot run now (closed, a stale device tensor, TensorRT refused a call)."""


class UnknownTensorError(EdgeFpnError, KeyError):
    """A tensor name the engine does not have; still a KeyError."""

    def __str__(self) -> str:  # KeyError quotes its message; an error sentence should not be quoted
        return str(self.args[0]) if self.args else ""
