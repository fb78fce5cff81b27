"""``python -m a2ls_lightning.cli ...``: exactly the ``a2ls`` command."""

from a2ls_lightning.cli import main

main()
