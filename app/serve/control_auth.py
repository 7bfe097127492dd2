"""Who may ask the control app for what: operator tokens and their scopes.

=================================  ==========================================================
request                            scopes needed
=================================  ==========================================================
``POST /forecast``                 ``forecast:read``; with caller ``readings`` or ``as_of``
                                   also ``control:simulate``
``POST /control``, live            ``control:write`` (the command is signed and sent)
``POST /control``, ``dry_run``     ``control:write`` or ``control:simulate`` (audited, not sent)
``POST /control`` with caller      ``control:simulate``; the decision is a dry run, whatever the
``readings`` or ``as_of``          request says: a made-up state never reaches an actuator
                                   (except ``as_of`` on a deployment with
                                   ``control.simulated_plant``, whose plant is a simulation)
=================================  ==========================================================

:func:`missing_scope` is the pure rule; :class:`OperatorGate` applies it to a request's
``Authorization`` header and answers 401 or 403 as :class:`~app.serve.control_api.ServeError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, Protocol

from app.security.credentials import CONTROL_SIMULATE, CONTROL_WRITE, FORECAST_READ, OperatorIdentity, bearer_token
from app.serve.control_api import MISSING_SCOPE, UNAUTHENTICATED, ServeError

log = logging.getLogger(__name__)

Route = Literal["forecast", "control"]
# Why a request was refused, as gh_auth_failures_total{surface="control"} counts it
REFUSED_UNAUTHENTICATED = "unauthenticated"  # 401: no, unknown, revoked or expired token
REFUSED_MISSING_SCOPE = "missing_scope"  # 403: a valid operator without the scope the request needs


def missing_scope(scopes: frozenset[str], route: Route, *, caller_state: bool, dry_run: bool) -> str | None:
    """What ``scopes`` lack for this request (a short phrase), or ``None`` when they suffice.

    ``caller_state``: the request sends its own readings or ``as_of``; ``dry_run``: it asks for a
    decision that is not sent."""
    if route == "forecast":
        if FORECAST_READ not in scopes:
            return FORECAST_READ
        return CONTROL_SIMULATE if caller_state and CONTROL_SIMULATE not in scopes else None
    if caller_state:
        return None if CONTROL_SIMULATE in scopes else f"{CONTROL_SIMULATE} (caller-supplied readings or as_of)"
    if dry_run:
        return None if scopes & {CONTROL_WRITE, CONTROL_SIMULATE} else f"{CONTROL_WRITE} or {CONTROL_SIMULATE}"
    return None if CONTROL_WRITE in scopes else CONTROL_WRITE


def never_sent(*, caller_readings: bool, caller_as_of: bool, simulated_plant: bool) -> bool:
    """Whether a decision must stay a dry run because the caller chose its state or its instant."""
    return caller_readings or (caller_as_of and not simulated_plant)


class Authenticator(Protocol):
    def authenticate(self, token: str | None) -> OperatorIdentity | None: ...


class OperatorGate:
    """Checks a request's operator token (an :class:`~app.security.credentials.OperatorRegistry`);
    ``on_refused`` (metrics) is called with :data:`REFUSED_UNAUTHENTICATED` or
    :data:`REFUSED_MISSING_SCOPE` for each refusal."""

    def __init__(self, operators: Authenticator, on_refused: Callable[[str], None] | None = None) -> None:
        self._operators = operators
        self._on_refused = on_refused

    def admit(self, authorization: str | None, route: Route, *, caller_state: bool = False, dry_run: bool = False) -> OperatorIdentity:
        """The operator asking, when allowed; else raises 401 (no, unknown, revoked or expired
        token: which one is not said) or 403 (a scope is missing: named)."""
        who = self._operators.authenticate(bearer_token(authorization))
        if who is None:
            self._refused(REFUSED_UNAUTHENTICATED)
            raise ServeError(401, UNAUTHENTICATED, "missing, invalid, revoked or expired bearer token")
        lacking = missing_scope(who.scopes, route, caller_state=caller_state, dry_run=dry_run)
        if lacking:
            self._refused(REFUSED_MISSING_SCOPE)
            raise ServeError(403, MISSING_SCOPE, f"operator {who.name!r} lacks the scope {lacking}")
        return who

    def _refused(self, reason: str) -> None:
        if self._on_refused is not None:
            try:
                self._on_refused(reason)
            except Exception:  # metrics never change an answer
                log.exception("control auth metrics hook failed")
