"""The one exception type users see: a one-line message, no traceback."""


class MultiboxError(Exception):
    """A problem with the user's input (config, files, data, checkpoint).

    The CLI prints ``error: <message>`` and exits with status 2; the message must
    name the file or key at fault and say what is wrong, on one line.
    """


class TrainingInterrupted(Exception):
    """Training stopped by Ctrl-C (SIGINT) or SIGTERM; the CLI prints where and how to continue, and exits 130.

    `epoch` is 1-based, `step` the optimizer steps done, `checkpoint` the newest checkpoint (None when none was).
    """

    def __init__(self, signal_name: str, epoch: int, step: int, checkpoint: str | None):
        super().__init__(
            f"{signal_name}: interrupted at epoch {epoch} step {step}; last checkpoint: {checkpoint or 'none'}"
        )
        self.signal_name, self.epoch, self.step, self.checkpoint = signal_name, epoch, step, checkpoint
