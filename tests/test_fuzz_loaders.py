"""A quick fuzz of every loader (tests/fuzz_harness.py): generated files give a result or a GzsqError.

CI runs a few dozen inputs per loader; `python -m experiments.fuzz_loaders` runs 10 000+ and
writes results/fuzz_loaders.txt.
"""

import pytest
from hypothesis import HealthCheck, given, settings

from .fuzz_harness import TARGETS, outcome

QUICK = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_loader_survives_generated_input(target):
    strategy, _ = TARGETS[target]

    @QUICK
    @given(strategy())
    def check(data):
        outcome(target, data)  # anything but a result or a GzsqError fails, shrunk by hypothesis

    check()
