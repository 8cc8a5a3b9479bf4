"""The rig's user-facing errors: one base class, so that `rig` and the pytest plugin know what to
say as it is (a sentence naming what is wrong and what to do) from what is a bug."""


class RigError(Exception):
    """Something the user must fix. The message is one sentence: what is wrong, then what to do."""


class CommandError(RigError):
    """A `rig` command was asked for something it cannot do as given."""
