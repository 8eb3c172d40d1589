import pytest


def pytest_collection_modifyitems(items):
    """The deployments (dagster dev, the daemon, servers) run one after another on one xdist
    worker: two at once on a 2-core machine would race their own timeouts."""
    for item in items:
        if "/deploy/" in str(item.path):
            item.add_marker(pytest.mark.xdist_group("deploy"))
