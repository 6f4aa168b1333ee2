"""The fuzz campaign of `benchmarks/fuzz.py`: seed files, mutators, targets (the commands that read each kind
of file), a fork server that runs each case in a child with a time and memory limit, and the regression
cases it saves.

Kept apart from the package: it drives the `wav2lip` command from outside, as a user would.
"""
