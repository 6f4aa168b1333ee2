"""Code the tests (and benchmarks) share: deterministic weights, small checkpoints, media helpers."""
