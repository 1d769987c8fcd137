"""`orgsync sync` as a real process tells the `[[notify]]` entries about held and failed
runs: a signed webhook, a Slack-compatible webhook and e-mail over STARTTLS, all real
receivers on loopback. Dry runs tell nobody; a dead or hanging receiver changes neither
the exit code nor, beyond a bounded wait at exit, the time a sync takes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from orgsync.notify.dispatcher import DRAIN_SECONDS
from tests.cli.harness import Rig, directory
from tests.notify.receivers import HttpReceiver, SmtpReceiver, closed_port_url
from tests.sources.servers import TlsFiles, make_tls

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

SECRET = "e2e-notify-hmac-secret-0123456789"
SMTP_PASSWORD = "e2e-smtp-password-0123456789"
PEOPLE = 16
REMOVED = tuple(range(1, 16))  # 15 people leave: more than max_removals = 10


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def webhook() -> Iterator[HttpReceiver]:
    with HttpReceiver(secret=SECRET.encode()) as receiver:
        yield receiver


def add_notify(rig: Rig, text: str) -> None:
    with rig.config_path.open("a", encoding="utf-8") as config:
        config.write("\n" + text)


def webhook_entry(url: str, **extra: str) -> str:
    lines = [
        "[[notify]]",
        'name = "hook"',
        'type = "webhook"',
        f'url = "{url}"',
        'secret_env = "E2E_NOTIFY_SECRET"',
        "allow_plaintext = true",
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def hold_removals(rig: Rig) -> None:
    """An organization where a sync holds 15 removals (max_removals = 10)."""
    rig.safety = "max_removals = 10\nmax_removal_ratio = 1.0"
    for i in REMOVED:
        rig.emulator.state.add_user(f"person{i}@example.com", "reader")
    rig.write(directory(PEOPLE, inactive=REMOVED))
    rig.env["E2E_NOTIFY_SECRET"] = SECRET


def test_a_held_sync_tells_each_channel_once_and_a_dry_run_tells_nobody(
    rig: Rig, webhook: HttpReceiver, tls: TlsFiles
) -> None:
    hold_removals(rig)
    with HttpReceiver() as slack, SmtpReceiver(tls, users={"orgsync": SMTP_PASSWORD}) as smtp:
        add_notify(rig, webhook_entry(webhook.url))
        add_notify(
            rig,
            f"""[[notify]]
name = "slack"
type = "slack"
url_env = "E2E_SLACK_URL"
allow_plaintext = true
events = ["held"]

[[notify]]
name = "mail"
type = "email"
host = "127.0.0.1"
port = {smtp.port}
tls = "starttls"
ca_file = "{tls.ca}"
username = "orgsync"
password_env = "E2E_SMTP_PASSWORD"
from = "orgsync@example.com"
to = ["it-ops@example.com"]
""",
        )
        rig.env.update(E2E_SLACK_URL=slack.url + "/services/T1/B1/slack-secret-path")
        rig.env.update(E2E_SMTP_PASSWORD=SMTP_PASSWORD)

        dry = rig.orgsync("sync", "--dry-run")
        assert dry.returncode == 3, dry.stderr
        held = rig.orgsync("sync")
        assert held.returncode == 3, held.stderr
        again = rig.orgsync("sync")  # the same held plan, 15 minutes later
        assert again.returncode == 3, again.stderr
        (mail,) = smtp.wait_for(1)
        slack.wait_for(1)
        time.sleep(0.5)
        assert len(slack.received) == 1
        assert len(smtp.messages) == 1

    (request,) = webhook.received
    assert request.signature_ok is True
    body = request.json()
    assert (body["kind"], body["target"], body["held"], body["trigger"]) == (
        "held",
        "openai-test",
        15,
        "cli",
    )
    assert body["guards"] == [
        {"reason": "15 removals exceed safety.max_removals = 10", "operations": 15}
    ]
    assert len(body["held_operations"]) == 10 and body["held_not_listed"] == 5
    assert "• and 5 more" in body["text"]
    assert "orgsync sync --dry-run --target openai-test" in body["commands"]

    slack_body = slack.received[0].json()
    assert slack_body["text"] == "openai-test: 15 operations held by the safety gate"
    assert "15 removals exceed safety.max_removals = 10" in slack_body["blocks"][1]["text"]["text"]

    assert mail.tls and mail.authenticated == "orgsync"
    assert mail.message["Subject"] == "[orgsync] openai-test: 15 operations held by the safety gate"
    content = mail.message.get_content()
    assert "orgsync sync --target openai-test --allow-removals 15" in content

    everything = request.body.decode() + slack.received[0].body.decode() + content
    everything += held.stdout + held.stderr + again.stderr
    for secret in (SECRET, SMTP_PASSWORD, "slack-secret-path"):
        assert secret not in everything
    assert "notify.suppressed" in again.stderr


def test_a_clean_sync_sends_nothing_and_a_failed_one_a_failure_notification(
    rig: Rig, webhook: HttpReceiver
) -> None:
    rig.write(directory(3))
    rig.env["E2E_NOTIFY_SECRET"] = SECRET
    add_notify(rig, webhook_entry(webhook.url))
    assert rig.orgsync("sync").returncode == 0
    assert webhook.received == []
    rig.emulator.api_key = "sk-admin-rotated-elsewhere-0000000000000000000"
    result = rig.orgsync("sync")
    assert result.returncode == 1
    (request,) = webhook.wait_for(1)
    body = request.json()
    assert (body["kind"], body["target"]) == ("failed", "openai-test")
    assert "Incorrect API key" in body["error"]
    assert "orgsync runs --target openai-test" in body["commands"]


@pytest.mark.parametrize("receiver", ["hangs", "is down"])
def test_a_bad_receiver_never_changes_the_exit_code_and_costs_a_bounded_wait(
    rig: Rig, receiver: str
) -> None:
    hold_removals(rig)
    with HttpReceiver(secret=SECRET.encode(), default="hang") as hanging:
        url = hanging.url if receiver == "hangs" else closed_port_url()
        # Unbounded, three 30 s attempts would keep the process for over 90 s.
        add_notify(rig, webhook_entry(url, timeout='"30s"', max_attempts="3"))
        started = time.monotonic()
        result = rig.orgsync("sync")
        elapsed = time.monotonic() - started
    print(f"\nsync with a receiver that {receiver}: exit {result.returncode} in {elapsed:.1f} s")
    assert result.returncode == 3, result.stderr
    assert elapsed < DRAIN_SECONDS + 10
    if receiver == "hangs":
        assert "notify.abandoned" in result.stderr
    else:
        assert "notify.failed" in result.stderr


def test_a_missing_notify_secret_fails_validate_but_never_an_operators_sync(
    rig: Rig, webhook: HttpReceiver
) -> None:
    rig.write(directory(3))
    add_notify(rig, webhook_entry(webhook.url))  # E2E_NOTIFY_SECRET is not set
    missing = rig.orgsync("validate", "--offline")
    assert missing.returncode == 1
    assert "notify hook (webhook): FAILED: notify.hook.secret_env" in missing.stdout
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stderr
    assert "notify.disabled" in result.stderr
    assert "notify.hook.secret_env: environment variable E2E_NOTIFY_SECRET" in result.stderr
    rig.env["E2E_NOTIFY_SECRET"] = SECRET
    present = rig.orgsync("validate", "--offline")
    assert present.returncode == 0, present.stdout
    assert "notify hook (webhook): credentials present (not contacted)" in present.stdout


def test_a_slack_url_quoted_back_by_the_receiver_leaks_nowhere(rig: Rig) -> None:
    """Red team: the receiver answers a 404 page quoting the request path (Slack's token).
    Neither `sync`'s output, nor `status` or `runs`, nor any file in the state directory
    holds the token or the path."""
    token = "xoxSlackPathToken0123456789abcdef"
    hold_removals(rig)
    with HttpReceiver(default="echo-path") as slack:
        add_notify(
            rig,
            '[[notify]]\nname = "slack"\ntype = "slack"\nurl_env = "E2E_SLACK_URL"\n'
            "allow_plaintext = true\nmax_attempts = 1\n",
        )
        rig.env["E2E_SLACK_URL"] = f"{slack.url}/services/T0ABC/B0DEF/{token}"
        held = rig.orgsync("sync")
        assert held.returncode == 3, held.stderr
        (request,) = slack.received
    assert token in request.path  # it was quoted back
    assert "notify.failed" in held.stderr and "answered 404" in held.stderr
    outputs = [held, rig.orgsync("status"), rig.orgsync("runs"), rig.orgsync("runs", "--json")]
    shown = "".join(result.stdout + result.stderr for result in outputs)
    assert token not in shown and "T0ABC/B0DEF" not in shown
    for path in rig.folder.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
