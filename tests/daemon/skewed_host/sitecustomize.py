"""Loaded by a test's `orgsync` process (on its PYTHONPATH): the process's wall clock runs
ORGSYNC_TEST_SKEW_SECONDS off, as on a host whose NTP is broken (`datetime.now`,
`time.time`; the monotonic and boot clocks are left alone, as a wrong wall clock leaves
them). Stands in for libfaketime, which is not installed here. Only for
tests/daemon/test_replicas_clock_processes.py.
"""

import datetime as _datetime
import os as _os
import time as _time

_skew = float(_os.environ.get("ORGSYNC_TEST_SKEW_SECONDS", "0") or 0)
if _skew:
    _Real = _datetime.datetime

    class _SkewedDateTime(_Real):
        # No instance dict: C extensions importing the type check its size.
        __slots__ = ()

        @classmethod
        def now(cls, tz: _datetime.tzinfo | None = None) -> _datetime.datetime:
            return _Real.now(tz) + _datetime.timedelta(seconds=_skew)

    _datetime.datetime = _SkewedDateTime  # type: ignore[misc]
    _real_time = _time.time
    _time.time = lambda: _real_time() + _skew
