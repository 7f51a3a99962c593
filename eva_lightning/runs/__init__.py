"""The run folder (``lightning_logs/<name>/version_N``): its layout, what a run records, reading it back (one
result of record) and its report.md; the commands built on it (``eva report``, ``compare``, ``seeds``) are in
:mod:`eva_lightning.tools`."""
