"""Launching whole systems: the process supervisor, fleets, the scenario runner and its report.

``robobus scenario run|validate|report``, ``robobus demo`` and ``robobus up`` live in
:mod:`bus.launch.cli`; the scenario format in :mod:`schemas.scenario`.
"""
