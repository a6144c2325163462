"""StopSignals: deferred inside the loop, at once outside it or on a second signal."""
import os
import signal

import pytest

from utils.signals import StopSignals, Terminated


def _send(signum):
    os.kill(os.getpid(), signum)


def test_outside_the_loop_a_signal_raises_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals().installed():
        with pytest.raises(Terminated):
            _send(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt) as caught:
            _send(signal.SIGINT)
        assert not isinstance(caught.value, Terminated)
    assert signal.getsignal(signal.SIGTERM) is before


def test_inside_the_loop_the_first_signal_waits_and_a_second_raises():
    with StopSignals().installed() as signals:
        with signals.deferred():
            _send(signal.SIGTERM)
            assert signals.requested()
            with pytest.raises(KeyboardInterrupt):
                _send(signal.SIGINT)
        with pytest.raises(Terminated):
            signals.raise_pending()
        assert not signals.requested()
        signals.raise_pending()  # nothing waits: nothing raised
