"""Fault tests: each proves one window of issue 8 closed (see the module docstrings).

The end-to-end ones reuse `tests/test_e2e.py`'s world: the real `reelbot` process against
the fake Discord and the stand-in APIMart, both in this test process on 127.0.0.1.
"""

from tests.test_e2e import world_fixture  # noqa: F401 - fixture
