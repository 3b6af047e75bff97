"""The admin tests' fixtures: a superuser and a test client logged in as them."""

import pytest


@pytest.fixture
def superuser(make_user):
    return make_user("root", superuser=True)


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client
