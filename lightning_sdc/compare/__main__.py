"""``python -m lightning_sdc.compare`` = ``lightning-sdc compare``."""

from lightning_sdc.compare.command import main

main()
