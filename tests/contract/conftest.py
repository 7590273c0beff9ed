"""The real platform for contract tests: ``strangler up --detach`` of the repository's plan.

Each test module gets its own stack (see tests/support/platform.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("flack_contract")

import flack_contract  # noqa: E402
from platform_stack import Platform, down, up  # noqa: E402, F401  (Platform: for the tests' hints)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One real stack for the module, taken down (by PID) afterwards."""
    base = tmp_path_factory.mktemp("platform")
    # every backend inherits the opt-in: the linked test page is on 127.0.0.1
    stack = up(base, env={"LINK_EXPANSION_ALLOW_PRIVATE": "true"})
    try:
        yield stack
    finally:
        down(stack.run_dir)


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """A local page (``flack_contract.PAGE_TITLE``) for link expansion to fetch."""
    with flack_contract.linked_page() as url:
        yield url
