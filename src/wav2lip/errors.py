"""The one exception type for problems the user can fix (bad file, wrong checkpoint, missing weights)."""


class Wav2LipError(Exception):
    """A user-fixable problem; the message names the file and what is wrong.

    The CLI prints it as one line and exits with code 2; anything else is a bug.
    """
