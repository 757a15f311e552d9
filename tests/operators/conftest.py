"""Operators: a staff superuser driving the Django admin (tests/conftest.py has the tenants
it acts on). The operator asks for transactional_db: the admin's decisions commit."""

import pytest
from django.contrib.auth import get_user_model

from tests.factories import SLEEPER  # noqa: F401 (tests import SLEEPER here)


@pytest.fixture
def operator(transactional_db):
    return get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123!")


@pytest.fixture
def staff_client(client, operator):
    client.force_login(operator)
    return client


def post_action(client, url: str, action: str, pks, **data):
    """Post an admin action from a change list, as its checkboxes and menu would."""
    return client.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks], **data})
