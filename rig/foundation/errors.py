"""The rig's own exception tree.

Callers tell a bad input (config, dataset, calibration, serial bytes) from a
broken or missing device by the class they catch. Every message names what was
wrong and where.
"""


class RigError(Exception):
    """Base of every error the rig raises on purpose."""


class ConfigError(RigError):
    """A configuration file is missing, unreadable or invalid.

    ``problems`` holds one human-readable line per problem found.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [message])
        super().__init__(message if problems is None else message + "\n" + "\n".join(self.problems))


class DatasetError(RigError):
    """A dataset directory does not follow the dataset format."""


class CalibrationError(RigError):
    """Calibration input or output is unusable; the message says what to do."""


class ModelError(RigError):
    """A model directory, ONNX file, gallery or engine is missing or mismatched."""


class DeviceError(RigError):
    """A hardware backend is unavailable or failed (camera, GPU, serial port)."""


class ProtocolError(RigError):
    """Bytes on the divert link do not form a valid frame."""
