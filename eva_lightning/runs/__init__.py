"""The run folder (``lightning_logs/<name>/version_N``): its layout, what a run records, reading it back (one
result of record), and ``eva report``, ``eva compare`` and ``eva seeds`` built on that."""
