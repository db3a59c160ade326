"""ternary_format.tiling.act_stream_bytes = the bytes of the stream the driver builds (not its code)."""

import numpy as np

from ternary_format.tiling import act_stream_bytes


def test_worked_example():
    # 3 tokens of 2, 1, 1 chunks at SIMD 4: 16 uint32 slots + 3 uint16 counts
    assert act_stream_bytes(4, 4, 3) == 16 * 4 + 3 * 2


def test_equals_the_driver_stream(tmp_path):
    from tatvpr_hw.lower.hls.paths import driver_package

    driver_package()
    from tatvpr_pynq.formats import schedule_activations

    rng = np.random.default_rng(0)
    x = rng.integers(-5, 6, size=(7, 40)).astype(np.int8)
    x[rng.random(x.shape) < 0.5] = 0
    tok, pairs = schedule_activations(x, 8, 4)
    assert act_stream_bytes(int(tok.sum()), 8, 7) == tok.nbytes + pairs.nbytes
