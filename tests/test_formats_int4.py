"""int4 (python/qkernels/formats/int4.py) against docs/formats.md: the quality floors. Packing (shared
with nf4), RTN, the MSE search, edge cases and input checks are in test_formats_grouped.py."""

from __future__ import annotations

import pytest
from formats_common import check_sqnr_floor
from qkernels.formats import int4

# Measured SQNR (dB) on the seeded N(0, 1) [512, 1024] weight and on MiniLM's query layer; each floor
# sits about 0.1 dB below.  (symmetric, group, method): (normal floor, minilm floor)
FLOORS = {
    (True, 32, "rtn"): (21.2, 21.0),  # measured 21.316, 21.178
    (True, 64, "rtn"): (20.35, 20.1),  # measured 20.451, 20.240
    (True, 128, "rtn"): (19.6, 19.35),  # measured 19.717, 19.452
    (True, -1, "rtn"): (17.95, 18.15),  # measured 18.054, 18.254
    (False, 32, "rtn"): (21.75, 21.65),  # measured 21.848, 21.762
    (False, 64, "rtn"): (20.7, 20.55),  # measured 20.812, 20.659
    (False, 128, "rtn"): (19.85, 19.6),  # measured 19.949, 19.736
    (False, -1, "rtn"): (17.9, 18.4),  # measured 18.025, 18.513
    (True, 32, "mse"): (21.7, 21.55),  # measured 21.830, 21.677
    (True, 128, "mse"): (20.15, 19.9),  # measured 20.295, 20.025
    (True, -1, "mse"): (19.35, 19.2),  # measured 19.481, 19.317
    (False, 32, "mse"): (22.1, 22.0),  # measured 22.225, 22.134
    (False, 128, "mse"): (20.35, 20.1),  # measured 20.454, 20.245
    (False, -1, "mse"): (19.35, 19.3),  # measured 19.482, 19.438
}


@pytest.mark.parametrize(("symmetric", "group", "method"), list(FLOORS), ids=str)
def test_sqnr_floor(symmetric, group, method):
    check_sqnr_floor(int4, FLOORS[symmetric, group, method], group, symmetric, method)
