"""What the extracted services share: registry join/leave, JWT auth, the load-balancer client.

- :mod:`extracted.common.config` — ``ServiceConfig.from_env(name, overrides)``;
- :mod:`extracted.common.service` — ``make_app``, ``emit_model``, ``init_database``;
- :mod:`extracted.common.auth` — ``token_auth``, ``token_optional_auth``, ``mark_seen``;
- :mod:`router.lbclient` — ``LBClient``, ``ServiceUnavailable``;
- :mod:`extracted.common.gunicorn` — ``service_settings`` for each ``gunicorn_conf.py``;
- :mod:`extracted.common.alembic_env` — ``run_environment`` for each ``migrations/<name>/env.py``.
"""

from extracted.common.auth import mark_seen, token_auth, token_optional_auth
from extracted.common.config import ServiceConfig
from extracted.common.service import emit_model, init_database, make_app
from router.lbclient import LBClient, ServiceUnavailable

__all__ = [
    "LBClient",
    "ServiceConfig",
    "ServiceUnavailable",
    "emit_model",
    "init_database",
    "make_app",
    "mark_seen",
    "token_auth",
    "token_optional_auth",
]
