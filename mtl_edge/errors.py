"""One domain error type: the CLI turns it into a clean message and exit code 1."""


class MtlEdgeError(Exception):
    """A problem the user can fix (bad input, missing dependency, unreachable device)."""


class AudioError(MtlEdgeError):
    """An audio file that cannot be used: unreadable, empty, corrupt, non-finite."""


class ManifestError(MtlEdgeError):
    """A corpus manifest that is malformed or inconsistent."""


class MissingSourceError(MtlEdgeError):
    """A system package the demo corpus needs is not installed."""


class Unsupported(MtlEdgeError):
    """What a format, precision or runtime cannot take (an op, a quantisation, an input kind).

    Export records it as an ``unsupported`` artefact with the reason instead of failing the whole export.
    """
