"""``robobus dashboard``: a live web view of the fleet and an instruction box (issue 17).

A Starlette app serves one dependency-free HTML+JS page and a WebSocket gateway to the bus
(:mod:`robobus.dashboard.gateway`); whether it may instruct is decided by
:mod:`robobus.dashboard.access`.
"""

from robobus.dashboard.access import Permission, instruct_permission
from robobus.dashboard.app import DashboardSettings, create_app, serve
from robobus.dashboard.gateway import Gateway

__all__ = ["DashboardSettings", "Gateway", "Permission", "create_app", "instruct_permission", "serve"]
