"""FloatRing: odd block sizes, wrap-around, full/empty edges and a two-thread transfer."""

import threading
import time

import numpy as np
import pytest

from spectro_fx.effect.core.ring import FloatRing
from spectro_fx.models.errors import ParameterError


@pytest.mark.parametrize("capacity", [1, 7, 64, 1000])
@pytest.mark.parametrize("channels", [1, 2])
def test_odd_blocks_round_trip_exactly_across_wrap(rng, capacity, channels):
    signal = rng.standard_normal((5000, channels)).astype(np.float32)
    ring = FloatRing(capacity, channels)
    out = np.empty_like(signal)
    w = r = 0
    sizes = [1, 64, 65, 3, 256, 8193, 2]
    k = 0
    while r < len(signal):
        n = sizes[k % len(sizes)]
        k += 1
        w += ring.write(signal[w : w + n])
        assert 0 <= ring.readable() <= capacity
        assert ring.readable() + ring.writable() == capacity
        m = sizes[(k * 3) % len(sizes)]
        r += ring.read(out[r : min(r + m, len(signal))])
    np.testing.assert_array_equal(out, signal)
    assert ring.write_pos == ring.read_pos == len(signal)


def test_full_ring_drops_the_excess_and_empty_ring_reads_nothing():
    ring = FloatRing(8, 1)
    block = np.arange(12, dtype=np.float32)[:, None]
    assert ring.write(block) == 8
    assert ring.write(block) == 0
    out = np.full((10, 1), -1.0, np.float32)
    assert ring.read(out) == 8
    np.testing.assert_array_equal(out[:8, 0], np.arange(8))
    assert np.all(out[8:] == -1.0)
    assert ring.read(out) == 0


def test_peek_with_offset_and_skip_keep_positions(rng):
    ring = FloatRing(16, 2)
    data = rng.standard_normal((12, 2)).astype(np.float32)
    ring.skip(0)
    ring.write(data[:10])
    ring.read(np.empty((9, 2), np.float32))  # read_pos 9: the next writes wrap
    ring.write(data[10:12])
    ring.write(data)  # 3 + 12 = 15 frames held, across the wrap
    peeked = np.empty((5, 2), np.float32)
    assert ring.peek(peeked, offset=3) == 5
    np.testing.assert_array_equal(peeked, data[:5])
    assert ring.readable() == 15
    assert ring.skip(100) == 15
    assert ring.readable() == 0 and ring.read_pos == 24


def test_ints_are_absolute_and_float64_blocks_are_converted():
    ring = FloatRing(4, 1)
    for i in range(1000):
        ring.write(np.array([[float(i)]]))
        out = np.empty((1, 1), np.float32)
        ring.read(out)
        assert out[0, 0] == i
    assert ring.write_pos == 1000


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ParameterError, match="capacity="):
        FloatRing(bad, 1)
    with pytest.raises(ParameterError, match="channels="):
        FloatRing(4, bad)


def test_two_threads_transfer_a_sequence_without_loss_or_reordering():
    total = 200_000
    ring = FloatRing(1000, 2)
    ramp = np.stack([np.arange(total), -np.arange(total)], axis=1).astype(np.float32)
    received = np.empty_like(ramp)

    def produce():
        pos = 0
        sizes = (1, 17, 256, 333)
        k = 0
        while pos < total:
            n = sizes[k % 4]
            k += 1
            pos += ring.write(ramp[pos : pos + n])
            if ring.writable() == 0:
                time.sleep(0)

    thread = threading.Thread(target=produce)
    thread.start()
    got = 0
    deadline = time.monotonic() + 30
    while got < total and time.monotonic() < deadline:
        got += ring.read(received[got : got + 129])
    thread.join()
    assert got == total
    np.testing.assert_array_equal(received, ramp)


def test_advance_write_publishes_stale_frames_within_capacity():
    ring = FloatRing(10, 1)
    ring.write(np.ones((4, 1), np.float32))
    assert ring.advance_write(100) == 6
    assert ring.readable() == 10 and ring.advance_write(1) == 0
    assert ring.skip(10) == 10


def test_a_doorbell_rung_before_the_wait_is_not_lost_and_rings_pile_into_one_wake():
    from spectro_fx.effect.core.ring import Doorbell

    bell = Doorbell()
    assert bell.wait(0.0) is False  # nothing rang
    bell.ring()
    assert bell.wait(0.0) is True  # rung before the wait: kept in the pipe
    assert bell.wait(0.0) is False  # and swallowed by that wait
    for _ in range(200_000):  # far more than a pipe holds: ring never blocks or raises
        bell.ring()
    assert bell.wait(0.0) is True and bell.wait(0.0) is False
    bell.close()
    bell.ring()  # closed: nobody waits, nothing raised
    assert bell.wait(0.0) is False


def test_a_doorbell_wakes_a_thread_waiting_on_it():
    import threading

    from spectro_fx.effect.core.ring import Doorbell

    bell = Doorbell()
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(bell.wait(30.0)))
    waiter.start()
    bell.ring()
    waiter.join(timeout=30.0)
    assert woke == [True]  # the 30 s timeout would have given False
