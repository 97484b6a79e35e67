"""The one exception type users see: a one-line message, no traceback."""


class MultiboxError(Exception):
    """A problem with the user's input (config, files, data, checkpoint).

    The CLI prints ``error: <message>`` and exits with status 2; the message must
    name the file or key at fault and say what is wrong, on one line.
    """
