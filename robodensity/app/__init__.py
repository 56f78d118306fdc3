"""Application layer: the one CLI, the demo, the jobs and reports, the embedded services.

The top of the stack: may import every other layer; nothing imports it (tests and bench aside).
"""
