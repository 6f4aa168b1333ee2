"""Media in and out: decoding and encoding with PyAV, audio and its mel, files written atomically."""
