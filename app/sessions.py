"""Flask's signed cookie session, with its serializer made once per set of keys.

Flask builds a new itsdangerous serializer for every request when it opens the session and again
when it saves it; building one encodes a test value to learn the serializer's kind. Here the
serializer is kept and rebuilt only when SECRET_KEY or SECRET_KEY_FALLBACKS change, so key
rotation works as before. An empty session that nothing changed (a survey page, which sets no
cookie) is done with before the cookie's settings are looked up. The cookie's format, signing
and checks are Flask's own."""

from __future__ import annotations

from flask import Flask, Response
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from itsdangerous import URLSafeTimedSerializer


class CookieSessions(SecureCookieSessionInterface):
    """SecureCookieSessionInterface, its signing serializer cached per key set."""

    def __init__(self) -> None:
        self._cached: tuple[tuple, URLSafeTimedSerializer] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            return None
        keys = (*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key)
        cached = self._cached  # one read: another thread may replace it meanwhile
        if cached is not None and cached[0] == keys:
            return cached[1]
        serializer = super().get_signing_serializer(app)
        if serializer is not None:
            self._cached = (keys, serializer)
        return serializer

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not session and not session.modified:  # what Flask does then, without the look-ups
            if session.accessed:
                response.vary.add("Cookie")
            return
        super().save_session(app, session, response)
