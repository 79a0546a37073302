"""Commands for people, beside the pipeline: ``lenet <command>`` (see ``lenet --help``).

The DVC stages live in ``stages/``; the network in ``nn/``. This package holds what a user
runs by hand around them: one module per command, registered in :mod:`lenet.cli`.
"""
