"""Training (torch): the models, the tasks, the BPTT loop, checkpoints and diagnostics.

Importing this package imports nothing; each module imports torch itself.
"""
