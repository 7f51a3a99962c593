"""The run folder (``lightning_logs/<name>/version_N``): one package knows what it holds.

- :mod:`~eva_lightning.runs.layout`: where a run's files live, the newest version, the run named on a command line
- :mod:`~eva_lightning.runs.record`: what a run writes besides its logs (``run_info.yaml``, ``fit_result.json``)
- :mod:`~eva_lightning.runs.result`: reading a run back (:class:`RunResult`) and its one result of record
- :mod:`~eva_lightning.runs.report`: ``report.md`` (``eva report``)
- :mod:`~eva_lightning.runs.compare`: several runs' curves and final values (``eva compare``)
- :mod:`~eva_lightning.runs.seeds`: one run per seed and their mean ± sd (``eva seeds``)
"""
