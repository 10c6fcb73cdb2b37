"""Online Boutique on zmicro: the reference application that ``zmicro demo`` runs.

A port of the well-known microservices demo shop: ten services, each a
``zmicro.Service`` in its own process, addressed by name, with a web frontend
and a load generator. See ``docs/boutique.md`` for the architecture.

Modules: ``money`` and ``cards`` (pure logic), ``model`` (the messages), one module
per service (``catalog``, ``currency``, ``cart``, ``recommendation``, ``shipping``,
``payment``, ``emails``, ``checkout``, ``ad``, ``frontend``), ``wiring`` (how a
service gets its client), ``launcher``, ``loadgen``, ``report`` and ``demo``.
Nothing is imported here, so that each service process loads only what it uses.
"""

from __future__ import annotations

__all__ = ()
