"""The training-data layout and everything that writes it: synth, preprocess, sync-fix, filtering."""
