"""The security event line: stable for fail2ban, safe against forged fields, rate-limited."""

from __future__ import annotations

import logging

import pytest

from gateway import security
from gateway.security import SecurityEvent, SecurityEvents


def test_line_format_and_counter(caplog: pytest.LogCaptureFixture) -> None:
    events = SecurityEvents()
    with caplog.at_level(logging.WARNING, logger="gateway.security"):
        events.record(SecurityEvent.AUTH_FAILED, "203.0.113.7", user="alice", detail="bad password")
    assert caplog.messages == [
        'SECURITY event=auth-failed src=203.0.113.7 user="alice" detail="bad password"'
    ]
    assert events.counts[SecurityEvent.AUTH_FAILED] == 1
    assert 'sipgw_security_events_total{event="auth-failed"} 1' in events.metrics_lines()


def test_hostile_values_cannot_forge_fields(caplog: pytest.LogCaptureFixture) -> None:
    events = SecurityEvents()
    with caplog.at_level(logging.WARNING, logger="gateway.security"):
        events.record(SecurityEvent.AUTH_FAILED, "127.0.0.1", user='x" src=1.2.3.4\nSECURITY')
    (line,) = caplog.messages
    assert "\n" not in line
    assert line.count('"') == 2
    assert line.count("src=") == 2  # the forged one stays inside the quoted user value
    assert line.startswith("SECURITY event=auth-failed src=127.0.0.1 ")


def test_repeats_are_counted_but_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    events = SecurityEvents()
    monkeypatch.setattr(events, "_now", lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="gateway.security"):
        for _ in range(50):
            events.record(SecurityEvent.RATE_LIMITED, "127.0.0.9")
        events.record(SecurityEvent.RATE_LIMITED, "127.0.0.10")
        now[0] += security.LOG_INTERVAL
        events.record(SecurityEvent.RATE_LIMITED, "127.0.0.9")
    assert events.counts[SecurityEvent.RATE_LIMITED] == 52
    assert caplog.messages == [
        "SECURITY event=rate-limited src=127.0.0.9",
        "SECURITY event=rate-limited src=127.0.0.10",
        "SECURITY event=rate-limited src=127.0.0.9 suppressed=49",
    ]
