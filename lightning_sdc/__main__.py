"""``python -m lightning_sdc`` runs the ``lightning-sdc`` command line."""

from lightning_sdc.cli import main

if __name__ == "__main__":
    main()
