"""The API tests' fixtures (bulkops.tests.support.api)."""

from bulkops.tests.support.api import api, fast_password_hasher  # noqa: F401
