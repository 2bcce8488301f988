"""Errors that name the problem and the fix, raised for bad input."""


class XCrossError(Exception):
    """Base class of the workbench's own errors."""


class DataError(XCrossError, ValueError):
    """The data is missing, malformed, or breaks the protocol's assumptions."""


class ParameterError(XCrossError, ValueError):
    """A parameter name or value that the workbench does not know."""


class RunMismatchError(ParameterError):
    """A run folder already holds a run that was defined by other settings."""


class ModelFileError(XCrossError, ValueError):
    """A saved model's file is missing, cut or corrupt; the error names the file and how to restore it."""
