"""The recogniser: image decoding, face detection, emotion model, tracking.

Nothing in this package imports Flask, so it can be used from the training
tools, benchmarks and scripts alike.
"""
