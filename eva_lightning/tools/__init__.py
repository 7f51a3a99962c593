"""Every ``eva <tool>`` command, one module each with a ``main(argv)`` (``TOOLS`` in :mod:`eva_lightning.entry`):
``lr_find``, ``summary``, ``tune``, ``seeds``, ``report``, ``compare``. One parser style, jsonargparse: a tool that
builds a config's model and data subclasses :class:`~eva_lightning.cli.EvaCLI` (lr_find, summary); the others use
``jsonargparse.ArgumentParser``. Arguments after ``--`` go to every ``eva fit`` a tool starts (seeds, tune)."""
