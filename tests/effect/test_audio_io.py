"""The real-time bridge (dry fallback, crossfades, counters) driven block by block, and device
resolution on the JACK dummy server."""

from types import SimpleNamespace

import numpy as np
import pytest

from spectro_fx.effect.io.audio_io import StreamBridge
from spectro_fx.models.errors import ParameterError

SR = 48000
BLOCK = 256
LATENCY = 300
FADE = 96
MARGIN = BLOCK + FADE + 128


class DelayEngine:
    """A stand-in worker: the input delayed by LATENCY frames, times ``gain``."""

    def __init__(self, channels, gain=1.0):
        self.line = np.zeros((LATENCY, channels), np.float32)
        self.gain = np.float32(gain)

    def process(self, block):
        line = np.concatenate([self.line, block])
        self.line = line[len(block):]
        return line[: len(block)] * self.gain


def make_bridge(channels=2, out_channels=None, **kw):
    return StreamBridge(
        sr=SR, channels=channels, out_channels=out_channels or channels, blocksize=BLOCK,
        engine_latency=LATENCY, margin=MARGIN, fade=FADE, **kw,
    )


def serve(bridge, engine, buf):
    """The worker's job, done synchronously: everything available goes through the engine."""
    n = bridge.to_worker.read(buf)
    if n:
        assert bridge.from_worker.write(engine.process(buf[:n])) == n


def run(bridge, signal, *, late_blocks=(), gain=1.0):
    engine = DelayEngine(bridge.channels, gain)
    buf = np.zeros((8192, bridge.channels), np.float32)
    out = np.zeros((len(signal), bridge.out_channels), np.float32)
    for k, start in enumerate(range(0, len(signal), BLOCK)):
        bridge.duplex_callback(signal[start : start + BLOCK], out[start : start + BLOCK], BLOCK, None, None)
        if k not in late_blocks:
            serve(bridge, engine, buf)
    return out


def test_an_on_time_worker_is_heard_delayed_by_latency_plus_margin(rng):
    x = rng.standard_normal((BLOCK * 200, 2)).astype(np.float32)
    bridge = make_bridge()
    y = run(bridge, x, gain=0.5)
    delay = LATENCY + MARGIN
    np.testing.assert_array_equal(y[delay + 2 * BLOCK :], 0.5 * x[2 * BLOCK : -delay])
    # blocks before the first worker frame is due are not underruns
    assert bridge.underruns == 0
    assert bridge.callbacks == 200 and bridge.frames == len(x)


def test_a_late_worker_plays_the_aligned_dry_input_and_counts_underruns(rng):
    x = rng.standard_normal((BLOCK * 300, 2)).astype(np.float32)
    late = set(range(50, 60)) | set(range(120, 123)) | {200} | set(range(250, 300))
    bridge = make_bridge()
    y = run(bridge, x, late_blocks=late)  # gain 1: wet and dry are the same signal
    delay = LATENCY + MARGIN
    # whatever was played, wet or dry, is the input delayed by exactly `delay`
    np.testing.assert_allclose(y[delay:], x[:-delay], atol=2e-7)
    assert bridge.underruns > 0
    assert bridge.underrun_frames == bridge.underruns * BLOCK


def test_wet_dry_changes_are_crossfaded_without_clicks():
    t = np.arange(BLOCK * 300) / SR
    x = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None]
    late = set(range(40, 48)) | set(range(100, 101)) | set(range(180, 200))
    bridge = make_bridge(channels=1)
    y = run(bridge, x, late_blocks=late, gain=0.25)  # wet is much quieter than dry
    assert bridge.underruns >= 8 + 1 + 20
    assert np.isfinite(y).all()
    steps = np.abs(np.diff(y[LATENCY + MARGIN :, 0]))
    # a sine at 220 Hz moves at most 0.5 * 2 pi 220 / 48000 = 0.0144 per sample; a hard
    # switch between 0.5 and 0.125 amplitude would jump by up to 0.375
    assert steps.max() < 0.03, steps.max()
    # and there are dry stretches (full amplitude) and wet ones (quarter amplitude)
    heard = np.abs(y[LATENCY + MARGIN :, 0])
    envelope = heard[: len(heard) // BLOCK * BLOCK].reshape(-1, BLOCK).max(axis=1)
    assert envelope.max() > 0.45 and envelope.min() < 0.15


def test_mono_processing_plays_on_every_output_channel_and_records_it(rng):
    x = rng.standard_normal((BLOCK * 40, 1)).astype(np.float32)
    bridge = make_bridge(channels=1, out_channels=2, record_s=1.0)
    y = run(bridge, x)
    np.testing.assert_array_equal(y[:, 0], y[:, 1])
    recorded = np.zeros((len(x), 2), np.float32)
    assert bridge.record_ring.read(recorded) == len(x)
    np.testing.assert_array_equal(recorded, y)
    assert bridge.in_peak > 0 and bridge.out_peak > 0


def test_odd_callback_sizes_larger_than_the_scratch_buffers(rng):
    x = rng.standard_normal((20000, 2)).astype(np.float32)
    bridge = make_bridge()
    engine = DelayEngine(2)
    buf = np.zeros((20000, 2), np.float32)
    y = np.zeros_like(x)
    pos = 0
    for size in (1, 65, 8193, 3000, 5000, 3741):
        bridge.duplex_callback(x[pos : pos + size], y[pos : pos + size], size, None, None)
        serve(bridge, engine, buf)
        pos += size
    assert pos == len(x)
    delay = LATENCY + MARGIN
    np.testing.assert_allclose(y[delay:], x[:-delay], atol=2e-7)


def test_portaudio_status_flags_are_counted():
    bridge = make_bridge()
    x = np.zeros((BLOCK, 2), np.float32)
    out = np.zeros_like(x)
    flags = SimpleNamespace(input_underflow=False, input_overflow=True, output_underflow=True, output_overflow=False)
    bridge.duplex_callback(x, out, BLOCK, None, flags)
    bridge.duplex_callback(x, out, BLOCK, None, None)
    assert bridge.xruns == 1
    assert bridge.xrun_flags == {"input_underflow": 0, "input_overflow": 1, "output_underflow": 1, "output_overflow": 0}


def test_an_exception_in_the_callback_outputs_silence_and_is_reported():
    bridge = make_bridge()
    out = np.ones((BLOCK, 2), np.float32)
    bridge.duplex_callback(np.zeros((BLOCK, 3), np.float32), out, BLOCK, None, None)  # wrong channels
    assert bridge.callback_error is not None
    assert not out.any()


@pytest.mark.parametrize("loop", [False, True])
def test_a_file_source_plays_once_or_loops(rng, loop):
    source = rng.standard_normal((1000, 2)).astype(np.float32)
    bridge = make_bridge(source=source, loop=loop)
    engine = DelayEngine(2)
    buf = np.zeros((8192, 2), np.float32)
    out = np.zeros((BLOCK * 20, 2), np.float32)
    for k in range(20):
        bridge.output_callback(out[k * BLOCK : (k + 1) * BLOCK], BLOCK, None, None)
        serve(bridge, engine, buf)
    delay = LATENCY + MARGIN
    heard = out[delay:]
    np.testing.assert_allclose(heard[:1000], source, atol=2e-7)
    if loop:
        np.testing.assert_allclose(heard[1000:2000], source, atol=2e-7)
        assert not bridge.source_done
    else:
        assert not heard[1000:].any()
        assert bridge.source_done


def test_margin_must_cover_a_block_and_the_fade():
    with pytest.raises(ParameterError, match="margin="):
        StreamBridge(sr=SR, channels=1, out_channels=1, blocksize=256, engine_latency=0, margin=300, fade=96)


@pytest.mark.jack
def test_devices_on_the_jack_server(jack_server):
    from spectro_fx.effect.io import audio_io

    listing = audio_io.list_devices()
    assert "JACK" in listing
    plan = audio_io.plan_stream("jack", blocksize=256)
    assert plan.is_jack and plan.sr == 48000 and plan.in_channels == 2 and plan.out_channels == 2
    with pytest.raises(ParameterError, match="no input device matches 'no-such-card'.*system"):
        audio_io.plan_stream("no-such-card")
    with pytest.raises(ParameterError, match="input device 99 does not exist"):
        audio_io.plan_stream("99")
    with pytest.raises(ParameterError, match="--channels=5 but input device"):
        audio_io.plan_stream("jack", channels=5)
    with pytest.raises(ParameterError, match="--blocksize=0"):
        audio_io.plan_stream("jack", blocksize=0)


def test_the_callback_allocates_no_audio_buffers(rng):
    import tracemalloc

    block = 1024  # 4 kB of float32 per block: any per-block buffer would show
    bridge = StreamBridge(
        sr=SR, channels=1, out_channels=2, blocksize=block, engine_latency=LATENCY,
        margin=block + FADE + 128, fade=FADE, record_s=1.0,
    )
    x = rng.standard_normal((block * 64, 1)).astype(np.float32)
    out = np.zeros((block, 2), np.float32)
    engine = DelayEngine(1)
    buf = np.zeros((8192, 1), np.float32)
    late = {20, 21, 30}
    for k in range(16):  # warm-up: wet, dry and both fades happen below as well
        bridge.duplex_callback(x[k * block : (k + 1) * block], out, block, None, None)
        serve(bridge, engine, buf)
        bridge.record_ring.skip(block)
    tracemalloc.start()
    try:
        peaks = []
        for k in range(16, 64):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            bridge.duplex_callback(x[k * block : (k + 1) * block], out, block, None, None)
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
            if k not in late:
                serve(bridge, engine, buf)
            bridge.record_ring.skip(block)
    finally:
        tracemalloc.stop()
    assert bridge.underruns == len(late)
    assert max(peaks) < 4 * block, peaks  # numpy views and floats only, never a block of samples
