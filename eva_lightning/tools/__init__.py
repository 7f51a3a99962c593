"""The ``main(argv)`` behind each ``eva <tool>`` (``TOOLS`` in :mod:`eva_lightning.entry`)."""
