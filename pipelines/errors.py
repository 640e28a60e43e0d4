"""Run-level failures of a pipeline: bad settings, unusable input, unchecked URLs."""


class PipelineError(RuntimeError):
    """Shown to the user as one line; the command exits non-zero."""
