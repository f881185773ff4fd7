"""Time estimates come from this machine's measured speed and land within 2x of a real run of about a second.

The check is a ratio of two times measured in the same process, not a limit on elapsed time.
"""

import time

import pytest
import torch

from noether.explorer.calibration import measured_speed
from noether.explorer.run import ExplorerRun
from noether.explorer.scenario import validate_scenario
from noether.explorer.weights import WeightOptions

pytestmark = pytest.mark.measured_speed


def layer(queries: int, keys: int) -> ExplorerRun:
    report = validate_scenario(
        {
            "attention": {"kind": "self_anchor", "hidden_dim": 192, "num_heads": 3, "branches": ["surface", "volume"]},
            "token_specs": [
                {"surface_anchors": keys},
                {"surface_queries": queries},
                {"volume_anchors": keys},
                {"volume_queries": queries},
            ],
            "run": {"device": "cpu", "inputs": "random"},
        }
    )
    assert report.scenario is not None
    return ExplorerRun(report.scenario)


def test_weight_pass_estimate_is_within_twice_the_real_time():
    speed = measured_speed(torch.device("cpu"))
    # Size the layer so that the pass takes about a second at the measured speed.
    keys = 1024
    queries = max(64, int(speed.stats_elements_per_s / (3 * 2 * keys)) - keys)
    run = layer(queries, keys)
    run.keys()  # projections of the keys are a separate step with its own estimate
    options = WeightOptions(chunk_bytes=WeightOptions().chunk_bytes)
    estimate = run.weights_estimate(1024, options).seconds
    start = time.perf_counter()
    run.weights(1024, options)
    actual = time.perf_counter() - start
    print(f"estimate {estimate:.2f} s, real {actual:.2f} s")
    assert 0.5 <= actual / estimate <= 2.0, f"estimate {estimate:.2f} s, real {actual:.2f} s"


def test_calibration_happens_once_per_process():
    first = measured_speed(torch.device("cpu"))
    assert measured_speed(torch.device("cpu")) is first
    assert first.flops_per_s > 0 and first.elements_per_s > 0 and first.stats_elements_per_s > 0
