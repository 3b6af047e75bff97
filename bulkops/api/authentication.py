"""DRF token authentication with its lookup as one precompiled statement.

Every token request reads its token and user from the database, as DRF's
``TokenAuthentication`` does — a deleted token or a deactivated user is refused on the
very next request, on every server, however it was changed (a cache of the lookup
would not be: another server, or a change that sends no signal, would leave it
stale). Only the building of that query is saved: DRF's ``select_related("user")
.get(key=…)`` is compiled by the ORM on every request (most of the lookup's CPU);
here its SQL is written once per database and the two rows are made with
``Model.from_db``, as the ORM makes them.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connections, router
from django.db.models import Model
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

#: The lookup's SQL and column counts by database alias.
_statements: dict[str, tuple[str, int] | None] = {}


def _plain_columns(model: type[Model]) -> list | None:
    """``model``'s concrete fields, when none converts what the database returns
    (``from_db_value``): their values go to ``from_db`` as they are read."""
    fields = list(model._meta.concrete_fields)
    return None if any(hasattr(f, "from_db_value") for f in fields) else fields


def _statement(alias: str) -> tuple[str, int] | None:
    """``SELECT`` the token of a key and its user (the token's columns first, then the
    user's), and how many columns are the token's; None where it is not written here
    (not PostgreSQL, or a field that converts its values)."""
    if alias in _statements:
        return _statements[alias]
    connection = connections[alias]
    users = get_user_model()
    token_fields, user_fields = _plain_columns(Token), _plain_columns(users)
    if connection.vendor != "postgresql" or token_fields is None or user_fields is None:
        _statements[alias] = None
        return None
    quote = connection.ops.quote_name
    user_fk = Token._meta.get_field("user")
    columns = [f"t.{quote(f.column)}" for f in token_fields]
    columns += [f"u.{quote(f.column)}" for f in user_fields]
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(Token._meta.db_table)} AS t "
        f"JOIN {quote(users._meta.db_table)} AS u "
        f"ON u.{quote(users._meta.pk.column)} = t.{quote(user_fk.column)} "
        f"WHERE t.{quote(Token._meta.pk.column)} = %s"
    )
    _statements[alias] = (sql, len(token_fields))
    return _statements[alias]


class PrecompiledTokenAuthentication(TokenAuthentication):
    """``TokenAuthentication``: the same header, answers and errors, its lookup one
    statement written once (PostgreSQL; DRF's own elsewhere)."""

    def authenticate_credentials(self, key):
        alias = router.db_for_read(Token)
        statement = _statement(alias) if self.get_model() is Token else None
        if statement is None:
            return super().authenticate_credentials(key)
        sql, split = statement
        with connections[alias].cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token = Token.from_db(alias, [f.attname for f in Token._meta.concrete_fields], row[:split])
        users = get_user_model()
        user = users.from_db(alias, [f.attname for f in users._meta.concrete_fields], row[split:])
        token.user = user
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (user, token)
