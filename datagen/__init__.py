"""datagen: video corpora -> training data for a unified image generation/editing model."""

__version__ = "0.1.0"


class UserError(Exception):
    """An error the user can fix (bad config, bad path, bad model path).

    The CLI prints its message as one line, without a traceback, and exits 2.
    """
