"""Run-level failures of a pipeline: bad settings, unusable input, failed partitions, broken accounting."""


class PipelineError(RuntimeError):
    """Shown to the user as one line; the command exits with `exit_code` (2: it cannot run as given)."""

    exit_code = 2


class RunFailed(PipelineError):
    """The run went through but could not finish everything: failed partitions, an accounting mismatch.

    What did finish is kept (manifests, sidecars), so running the same command again resumes.
    """

    exit_code = 1


class PartitionAccountingError(RuntimeError):
    """A partition's output does not account for every input unit it counted; it is not marked finished."""
