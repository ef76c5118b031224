"""Launching whole systems: the process supervisor, fleets, the scenario runner and its report.

``robobus scenario run|validate|report``, ``robobus demo`` and ``robobus up`` live in
:mod:`robobus.cli.scenario`; the scenario format in :mod:`robobus.schemas.scenario`.
"""
