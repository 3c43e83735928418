"""The built site, shared by the build test and the browser test."""

from __future__ import annotations

import pytest

from tests.docs.site import BuiltSite, build_site


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """One strict build per session, into a temporary directory."""
    return build_site(tmp_path_factory.mktemp("site"))
