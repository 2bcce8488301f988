"""Errors that name the problem and the fix, raised for bad input."""


class XCrossError(Exception):
    """Base class of the workbench's own errors."""


class DataError(XCrossError, ValueError):
    """The data is missing, malformed, or breaks the protocol's assumptions."""


class ParameterError(XCrossError, ValueError):
    """A parameter name or value that the workbench does not know."""


class RunMismatchError(ParameterError):
    """A run folder already holds a run that was defined by other settings."""
