"""Alerts: the database state machine, de-duplication, and real webhook and SMTP deliveries
to servers on 127.0.0.1 (a hanging webhook must not block the caller)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from retailml.core.db import PlatformDB
from retailml.core.errors import ConfigError, NotFoundError, StateError
from retailml.core.settings import Settings, load_settings
from retailml.monitoring import alerts as alerts_module
from retailml.monitoring.alerts import AlertManager, alert_fingerprint, normalise_severity
from retailml.monitoring.model_monitor import ModelMonitor


@pytest.fixture
def db_settings(settings: Settings, database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": database_url})


@pytest.fixture
def manager(db_settings: Settings) -> Iterator[AlertManager]:
    alerts = AlertManager(db_settings)
    yield alerts
    alerts.close()
    alerts.db.dispose()


class Webhook:
    """A local HTTP server recording POSTed JSON; it can hang or fail the first requests."""

    def __init__(self, *, sleep_first: float = 0.0, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self.sleep_first = sleep_first
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with outer.lock:
                    outer.requests += 1
                    number = outer.requests
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if number == 1 and outer.sleep_first:
                    time.sleep(outer.sleep_first)
                    return  # the client has given up; answer nothing
                if number <= outer.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                with outer.lock:
                    outer.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_manager(settings: Settings, hook: Webhook, **kwargs: Any) -> AlertManager:
    settings = settings.model_copy(
        update={"alert_channels": "log,webhook", "alert_webhook_url": hook.url}
    )
    return AlertManager(settings, **kwargs)


# -- the database state machine ------------------------------------------------------------


def test_an_alert_goes_open_acknowledged_resolved(manager: AlertManager) -> None:
    alert = manager.send("data_drift", "warning", "3 of 5 features drifted", model_name="m")
    assert alert.id is not None and alert.state == "open" and alert.count == 1
    assert alert.notified
    assert [a.id for a in manager.list_alerts(state="open")] == [alert.id]

    acked = manager.acknowledge(alert.id, by="alice")
    assert acked.state == "acknowledged"
    assert acked.acknowledged_by == "alice"
    assert acked.acknowledged_at is not None
    assert manager.acknowledge(alert.id, by="bob").acknowledged_by == "alice"  # idempotent
    assert manager.list_alerts(state="open") == []

    resolved = manager.resolve(alert.id)
    assert resolved.state == "resolved"
    assert resolved.resolved_at is not None
    assert manager.resolve(alert.id).resolved_at == resolved.resolved_at  # idempotent
    with pytest.raises(StateError, match="resolved"):
        manager.acknowledge(alert.id, by="carol")
    with pytest.raises(NotFoundError):
        manager.resolve("no-such-alert")
    with pytest.raises(ConfigError, match="open, acknowledged, resolved"):
        manager.list_alerts(state="closed")

    # After resolution the same problem opens a new alert.
    again = manager.send("data_drift", "warning", "drifted again", model_name="m")
    assert again.id != alert.id and again.notified and again.count == 1
    assert [a.state for a in manager.list_alerts()] == ["open", "resolved"]


def test_repeats_within_the_cool_down_only_count(manager: AlertManager) -> None:
    first = manager.send("perf", "high", "MAPE 21%", model_name="m", model_version="1")
    second = manager.send("perf", "critical", "MAPE 24%", model_name="m", model_version="1")
    third = manager.send(
        "perf", "critical", "MAPE 26%", model_name="m", model_version="1", details={"mape": 0.26}
    )
    assert first.notified and not second.notified and not third.notified
    assert third.id == first.id
    assert third.count == 3
    assert third.last_seen > first.last_seen
    assert third.message == "MAPE 26%" and third.details == {"mape": 0.26}
    assert third.first_seen == first.first_seen
    assert third.fingerprint == alert_fingerprint("perf", "m", "1", "critical")
    # Another severity, version or type is another alert.
    assert manager.send("perf", "warning", "x", model_name="m", model_version="1").notified
    assert manager.send("perf", "critical", "x", model_name="m", model_version="2").notified
    assert len(manager.list_alerts(state="open")) == 3


def test_an_open_alert_is_notified_again_after_the_cool_down(db_settings: Settings) -> None:
    alerts = AlertManager(db_settings.model_copy(update={"alert_cooldown_s": 0.5}))
    alerts.db.migrate()  # opened and migrated before the clock matters
    try:
        assert alerts.send("perf", "warning", "a").notified
        assert not alerts.send("perf", "warning", "b").notified
        time.sleep(0.55)
        reminded = alerts.send("perf", "warning", "c")
        assert reminded.notified and reminded.count == 3
        # Acknowledged alerts are never re-notified.
        assert reminded.id is not None
        alerts.acknowledge(reminded.id, by="ops")
        time.sleep(0.55)
        acked = alerts.send("perf", "warning", "d")
        assert not acked.notified and acked.count == 4 and acked.state == "acknowledged"
    finally:
        alerts.db.dispose()


def test_without_the_database_channel_repeats_are_suppressed_in_memory(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = AlertManager(settings.model_copy(update={"alert_channels": "log"}))
    with caplog.at_level("INFO", logger="retailml.monitoring.alerts"):
        first = alerts.send("perf", "info", "hello")
        second = alerts.send("perf", "info", "hello")
    assert first.id is None and first.notified
    assert not second.notified and second.count == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "INFO"] == [
        "alert [INFO] perf - hello"
    ]
    with pytest.raises(StateError, match="database"):
        alerts.list_alerts()


def test_severities_and_channels_are_validated(settings: Settings) -> None:
    assert [normalise_severity(s) for s in ("low", "Medium", "high", "critical")] == [
        "info",
        "warning",
        "critical",
        "critical",
    ]
    with pytest.raises(ConfigError, match="severity"):
        normalise_severity("apocalyptic")
    with pytest.raises(ConfigError, match="pager"):
        AlertManager(settings, channels="log,pager")
    with pytest.raises(ConfigError, match="RETAILML_ALERT_WEBHOOK_URL"):
        AlertManager(settings, channels="webhook")
    with pytest.raises(ConfigError, match="RETAILML_SMTP_HOST"):
        AlertManager(settings, channels="email")
    with pytest.raises(ConfigError, match="RETAILML_ALERT_CHANNELS"):
        load_settings(alert_channels="log,sms")


def test_two_managers_share_one_open_alert(db_settings: Settings) -> None:
    db = PlatformDB(db_settings.resolved_database_url)
    db.migrate()
    one, two = AlertManager(db_settings, db=db), AlertManager(db_settings, db=db)
    try:
        assert one.send("perf", "warning", "x").notified
        assert not two.send("perf", "warning", "x").notified
        assert [a.count for a in one.list_alerts()] == [2]
    finally:
        db.dispose()


# -- webhook -------------------------------------------------------------------------------


def test_the_webhook_receives_slack_compatible_json_once_per_cool_down(
    settings: Settings,
) -> None:
    hook = Webhook()
    alerts = webhook_manager(settings, hook)
    try:
        alerts.send("perf", "critical", "MAPE 25%", model_name="sales", model_version="1.2.0")
        alerts.send("perf", "critical", "MAPE 26%", model_name="sales", model_version="1.2.0")
        assert alerts.flush(timeout=10)
    finally:
        alerts.close()
        hook.close()
    assert hook.bodies == [{"text": "[CRITICAL] perf: sales 1.2.0 - MAPE 25%"}]
    assert alerts.delivery_stats["webhook"]["delivered"] == 1


def test_a_hanging_webhook_does_not_block_and_is_retried(settings: Settings) -> None:
    hook = Webhook(sleep_first=1.5)
    alerts = webhook_manager(settings, hook, timeout_s=0.3, backoff_s=0.05, attempts=4)
    try:
        started = time.perf_counter()
        alerts.send("perf", "critical", "first")
        alerts.send("drift", "warning", "second")
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5
        assert alerts.flush(timeout=15)
    finally:
        alerts.close()
        hook.close()
    assert sorted(body["text"] for body in hook.bodies) == [
        "[CRITICAL] perf - first",
        "[WARNING] drift - second",
    ]
    stats = alerts.delivery_stats["webhook"]
    assert stats["delivered"] == 2
    assert stats["retried"] >= 1
    assert hook.requests >= 3


def test_a_failing_webhook_is_retried_with_back_off_then_given_up(settings: Settings) -> None:
    hook = Webhook(fail_first=2)
    alerts = webhook_manager(settings, hook, timeout_s=1, backoff_s=0.05, attempts=3)
    try:
        alerts.send("perf", "critical", "eventually")
        assert alerts.flush(timeout=10)
    finally:
        alerts.close()
        hook.close()
    assert hook.requests == 3
    assert alerts.delivery_stats["webhook"] == {
        "delivered": 1,
        "retried": 2,
        "failed": 0,
        "dropped": 0,
    }

    lost = Webhook(fail_first=100)
    alerts = webhook_manager(settings, lost, timeout_s=1, backoff_s=0.01, attempts=2)
    try:
        alerts.send("perf", "critical", "never")
        assert alerts.flush(timeout=10)
    finally:
        alerts.close()
        lost.close()
    assert lost.requests == 2
    assert alerts.delivery_stats["webhook"]["failed"] == 1


# -- e-mail --------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_email_is_delivered_to_a_local_smtp_server(db_settings: Settings) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings = db_settings.model_copy(
        update={
            "alert_channels": "log,database,email",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_from": "retailml@example.test",
            "alert_email_to": "ops@example.test, ml@example.test",
        }
    )
    monitor = ModelMonitor("sales_forecast", "1.2.0", settings)
    try:
        alert = monitor.send_alert(
            alert_type="performance_degradation",
            severity="critical",
            message="Model MAPE increased to 23.00%",
            details={"mape": 0.23, "threshold": 0.2},
        )
        monitor.send_alert("performance_degradation", "critical", "repeat")  # de-duplicated
        assert monitor.alerts.flush(timeout=10)
    finally:
        controller.stop()
        monitor.alerts.close()
        monitor.db.dispose()
    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == "retailml@example.test"
    assert envelope.rcpt_tos == ["ops@example.test", "ml@example.test"]
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert " ".join(message["Subject"].split()) == (  # a long subject is folded
        "retailml alert [CRITICAL] performance_degradation: sales_forecast 1.2.0"
    )
    body = message.get_content()
    assert "Model MAPE increased to 23.00%" in body
    assert '"threshold": 0.2' in body
    assert alert.id is not None and alert.id in body


def test_cool_down_setting_is_a_timedelta(settings: Settings) -> None:
    alerts = AlertManager(settings.model_copy(update={"alert_channels": "log"}))
    assert alerts.cooldown == timedelta(seconds=300)
    assert alerts.channels == ("log",)


def test_alerts_still_go_out_when_the_database_is_down(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    hook = Webhook()
    down = settings.model_copy(
        update={
            "database_url": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
            "alert_channels": "log,database,webhook",
            "alert_webhook_url": hook.url,
        }
    )
    alerts = AlertManager(down)
    try:
        with caplog.at_level("ERROR", logger="retailml.monitoring.alerts"):
            first = alerts.send("db_down", "critical", "the platform database is unreachable")
            second = alerts.send("db_down", "critical", "still unreachable")
        assert alerts.flush(timeout=10)
    finally:
        alerts.close()
        hook.close()
    assert first.id is None and first.notified
    assert not second.notified and second.count == 2
    assert hook.bodies == [{"text": "[CRITICAL] db_down - the platform database is unreachable"}]
    assert any("alerts table unavailable" in r.getMessage() for r in caplog.records)


def test_delivery_threads_exit_when_idle_and_restart_on_the_next_alert(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts_module, "_IDLE_EXIT_S", 0.1)
    hook = Webhook()
    alerts = webhook_manager(settings, hook)

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "retailml-alerts-webhook"]

    try:
        assert workers() == []  # nothing sent yet: no thread
        alerts.send("a", "info", "one")
        assert alerts.flush(timeout=10)
        deadline = time.monotonic() + 5
        while workers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers() == []
        alerts.send("b", "info", "two")
        assert alerts.flush(timeout=10)
    finally:
        alerts.close()
        hook.close()
    assert len(hook.bodies) == 2
