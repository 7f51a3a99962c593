"""``eva`` subcommands that drive a Trainer (``eva lr_find``)."""
