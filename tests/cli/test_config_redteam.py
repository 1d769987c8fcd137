"""Red team: the configuration file and the command line, as a careless operator and as
an attacker who can edit the file or the environment would use them.

How they could hurt an administrator, each tried below against the real `orgsync`
command (in process, `orgsync.cli.main`, on a real OpenAI emulator where a run is needed):

- a leaked secret: a key pasted where a NAME or a path belongs (`*_env`, `*_file`, an
  LDAP URL, the protected list) repeated on the terminal, in the log, in `runs`, `status`
  or the state database;
- a daemon that silently stops reconciling: a key file that is a FIFO or a device hangs
  the start for ever; a `timeout = "0s"` fails every request with a connection error
  that names no key;
- a service that fails where the hand test worked: a relative `ca_file` looked for in the
  working directory (`/` under systemd), not beside the configuration;
- wrong data shown to the operator: a traceback instead of the key path and reason (a
  missing or wrong `ca_file`, a URL with a control character, a number too large for the
  state database), `validate --offline` saying "ok" for a file every run then refuses,
  terminal escapes from the file echoed back;
- a usage error read as "changes pending": every refusal must exit 1 (configuration) or
  64 (command line), never 2 or 3, and name what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from orgsync.cli import EXIT_USAGE, main
from orgsync.config import SecretRef, load_config
from orgsync.core.errors import ConfigError
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV
from tests.leaks import traces

MIB = 1 << 20

DIRECTORY = {
    "people": [
        {"id": "p0", "email": "ada@example.com", "name": "Ada"},
        {"id": "p1", "email": "bob@example.com", "name": "Bob"},
    ],
    "groups": [{"id": "g1", "name": "openai-users", "members": ["p0", "p1"]}],
}


@pytest.fixture(scope="module")
def organization() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY, key_owner_email="key-owner@example.com") as running:
        running.start()
        yield running


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    monkeypatch.delenv("ORGSYNC_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def write(
    folder: Path,
    *,
    base_url: str = "https://api.openai.example/v1",
    target: str = "",
    source: str = 'type = "file"\npath = "directory.json"',
    tail: str = "",
    key: str = f'api_key_env = "{KEY_ENV}"',
) -> Path:
    """A configuration (and its directory file) in `folder`; `target` goes into the
    target's table, `tail` after it."""
    (folder / "directory.json").write_text(json.dumps(DIRECTORY), encoding="utf-8")
    path = folder / "orgsync.toml"
    path.write_text(
        f"""[source]
{source}

[[targets]]
name = "openai-test"
type = "openai"
base_url = "{base_url}"
{key}
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
{target}

[state]
path = "state.db"
{tail}
""",
        encoding="utf-8",
    )
    return path


def _state_files(folder: Path) -> str:
    """The state database and its journal files, as text to search for a secret."""
    files = sorted(folder.glob("state.db*"))
    assert files
    return "".join(f.read_bytes().decode("latin-1") for f in files)


def orgsync(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`orgsync ARGS...` in process: its exit code, stdout and stderr. An exception out of
    `main` (a traceback for the operator) fails the test."""
    capfd.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- ca_file


@pytest.mark.parametrize("kind", ["missing", "not a certificate", "a folder"])
def test_a_wrong_ca_file_is_refused_by_validate_offline_by_key_and_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None, kind: str
) -> None:
    """A `ca_file` that does not exist, holds no certificate, or is a folder: `validate
    --offline` said "ok", then `validate` and every `sync` ended in a Python traceback
    (FileNotFoundError, ssl.SSLError) from the first connection. Now the configuration
    is refused before anything runs, naming the key, its line and the file."""
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    (tmp_path / "certs").mkdir()
    name = {"missing": "nowhere.pem", "not a certificate": "garbage.pem", "a folder": "certs"}
    config = write(tmp_path, target=f'ca_file = "{name[kind]}"')
    for command in (["validate", "--offline"], ["sync", "--dry-run"]):
        code, out, err = orgsync(capfd, "--config", str(config), *command)
        assert code == 1, (out, err)
        assert "Traceback" not in err
        assert "line 13: targets[0].ca_file: " in err, err
        assert str(tmp_path / name[kind]) in err
    assert not (tmp_path / "state.db").exists()  # refused before anything ran


def test_a_relative_ca_file_is_found_beside_the_configuration_from_any_directory(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    organization: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ca_file = "corp-ca.pem"` next to the configuration worked when the operator ran
    orgsync from that folder, and failed (a traceback) as a systemd service, whose
    working directory is `/`: a relative `ca_file` was looked for in the working
    directory, while `[source] path` and `[state] path` are taken from the
    configuration's folder. Now all three are."""
    folder = tmp_path / "etc"
    folder.mkdir()
    shutil.copy(certifi.where(), folder / "corp-ca.pem")
    config = write(folder, base_url=organization.base_url, target='ca_file = "corp-ca.pem"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(config).targets[0].ca_file == folder / "corp-ca.pem"
    code, out, err = orgsync(capfd, "--config", str(config), "validate")
    assert code == 0, (out, err)
    assert "target openai-test (openai): reachable" in out


# --------------------------------------------------------------------------- key files


def _resolves_within(ref: SecretRef, seconds: float) -> BaseException | str | None:
    """What `ref.resolve` ended with (its exception, or the value), or None if it was
    still blocked after `seconds`."""
    outcome: list[BaseException | str] = []

    def resolve() -> None:
        try:
            outcome.append(ref.resolve({}).get_secret_value())
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=resolve, daemon=True)
    worker.start()
    worker.join(seconds)
    return outcome[0] if outcome else None


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_key_file_that_is_a_fifo_or_a_device_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    """`api_key_file` naming a FIFO nobody writes to (or a terminal) hung the command,
    and a daemon's start, for ever without a word; a device (`/dev/zero`) was read until
    memory ran out. A key file is a regular file: anything else is refused at once,
    saying what it is."""
    if kind == "fifo":
        path = tmp_path / "key"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    outcome = _resolves_within(SecretRef(key="targets.t.api_key", file=path), 5)
    assert outcome is not None, "still reading the key file after 5 s"
    assert isinstance(outcome, ConfigError), outcome
    what = "a FIFO" if kind == "fifo" else "a device"
    assert str(outcome) == (
        f"targets.t.api_key_file: {path} is {what}, not a regular file holding the secret"
    )


def test_a_huge_key_file_is_refused_unread(tmp_path: Path) -> None:
    """A log file or a disk image named as a key file was read whole into memory (and
    then refused as two lines, or sent as a header). Refused by its size, unread."""
    path = tmp_path / "key"
    with path.open("wb") as handle:
        handle.truncate(MIB + 1)  # sparse: costs no disk
    with pytest.raises(ConfigError, match=r"api_key_file: .* is larger than 1 MiB: not a key"):
        SecretRef(key="api_key", file=path).resolve({})


def test_an_upper_case_key_pasted_into_api_key_env_is_repeated_nowhere(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    organization: OpenAIEmulator,
) -> None:
    """A key made of capitals and digits (an AWS access key id, an upper-case hex token)
    pasted into `api_key_env` passes as a variable NAME, and the "not set" error
    repeated it: on the terminal, in `validate`'s report and in the run history of the
    state database, which `runs` and `status` show. Such a name is not repeated now."""
    pasted = "AKIAIOSFODNN7EXAMPLE0123456789ABCDEF"
    config = write(tmp_path, base_url=organization.base_url, key=f'api_key_env = "{pasted}"')
    outputs = []
    for command in (
        ["validate", "--offline"],
        ["validate"],
        ["sync"],
        ["sync", "--dry-run", "--json"],
        ["runs", "--json"],
        ["status", "--json"],
        ["explain", "ada@example.com"],
    ):
        code, out, err = orgsync(capfd, "--config", str(config), *command)
        assert code == 1 or command[0] in {"runs", "status"}, (command, code, out, err)
        outputs.append(out + err)
    assert "api_key_env: environment variable it names is not set or empty" in outputs[0]
    database = _state_files(tmp_path)
    assert json.loads(outputs[4])  # the failed sync is in the history, without the key
    for text in (*outputs, database):
        assert traces(pasted, text) == [], text[:2000]


def test_a_name_written_as_names_are_is_still_repeated(tmp_path: Path) -> None:
    """The other side: an ordinary variable name missing is named, so the operator
    knows which one to set."""
    with pytest.raises(ConfigError, match="environment variable OPENAI_ADMIN_KEY_2 is not set"):
        SecretRef(key="api_key", env="OPENAI_ADMIN_KEY_2").resolve({})


# --------------------------------------------------------------------------- the file itself


def test_a_configuration_that_is_a_device_or_huge_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """`--config /dev/zero` (a completion gone wrong) read until memory ran out and ended
    in a MemoryError traceback; a log file given as `--config` was read whole. Refused
    with exit 1, naming the path."""
    code, out, err = orgsync(capfd, "--config", "/dev/zero", "validate", "--offline")
    assert (code, out) == (1, "")
    assert err == "orgsync: /dev/zero: a device, not a configuration file\n"
    huge = tmp_path / "syslog"
    with huge.open("wb") as handle:
        handle.truncate(16 * MIB + 1)
    code, out, err = orgsync(capfd, "--config", str(huge), "sync", "--dry-run")
    assert (code, out) == (1, "")
    assert err == f"orgsync: {huge}: larger than 16 MiB, not a configuration file\n"


def test_orgsync_config_set_but_empty_means_the_default(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Environment=ORGSYNC_CONFIG=` in a unit (a template left blank) named the working
    directory, refused as "." being a directory; set but empty is unset, as for
    `*_env` secrets: ./orgsync.toml."""
    write(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORGSYNC_CONFIG", "")
    code, out, err = orgsync(capfd, "validate", "--offline")
    assert code == 0, (out, err)
    assert out.startswith("configuration: ok (1 target(s))")


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://api.example.com/v1\\u001b[2J", "U+001B"),
        ("https://api.example.com/v1\\u007f", "U+007F"),
        ("https://api.exa\\u200bmple.com/v1", "U+200B"),
        ("https://api.example.com/v1#\\u0001", "U+0001"),
        ("https://api.example.com/" + "a" * 2100, "longer than 2048 characters"),
    ],
)
def test_a_target_url_with_a_control_character_is_refused_by_the_configuration(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None, url: str, says: str
) -> None:
    """A control or invisible character in `base_url` (a paste from a chat, a terminal
    escape planted in the file) passed `validate --offline`, then every run ended in a
    traceback from the HTTP client (`InvalidURL`); a zero-width space in the host passed
    as well. Refused now, the character named by its code point, never written raw to
    the terminal."""
    config = write(tmp_path, base_url=url)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    assert "line 8: targets[0]: base_url " in err and says in err, err
    assert not any(ord(c) < 0x20 and c != "\n" for c in err), repr(err)
    assert "\u200b" not in err and "\x7f" not in err


def test_credentials_in_an_ldap_url_are_refused_unshown(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """`url = "ldaps://admin:secret@ldap.example.com"`: accepted, and repeated by
    `validate` and by every connection error, which a sync records in the run history.
    Refused now, as any other URL with a user and password is, without repeating it."""
    secret = "Hunter2-LdapBindPassword-0123"
    source = (
        'type = "ldap"\n'
        f'url = "ldaps://cn=admin:{secret}@ldap.example.com:636"\n'
        'bind_dn = "cn=admin,dc=example,dc=com"\n'
        f'bind_password_env = "{KEY_ENV}"\n'
        'users_base = "ou=people,dc=example,dc=com"\n'
        'groups_base = "ou=groups,dc=example,dc=com"'
    )
    config = write(tmp_path, source=source)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, "")
    assert "url carries a user name or password" in err
    assert traces(secret, err) == [], err


@pytest.mark.parametrize(
    ("table", "value"),
    [
        ("target", 'timeout = "0s"'),
        ("target", "timeout = 0"),
        ("target", 'timeout = "50ms"'),
        ("target", 'timeout = "100d"'),
        ("source", 'timeout = "0s"'),
    ],
)
def test_a_timeout_that_fails_every_request_or_never_ends_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None, table: str, value: str
) -> None:
    """`timeout = "0s"` on a target or a network source failed every request at once,
    as "ConnectError: Operation now in progress" naming no key; a day-long one let a hung
    server hold a `sync` that long. Refused, naming the key and the bounds."""
    if table == "target":
        config = write(tmp_path, target=value)
    else:
        source = (
            'type = "scim"\nurl = "https://idp.example.com/scim/v2"\n'
            f'token_env = "{KEY_ENV}"\n{value}'
        )
        config = write(tmp_path, source=source)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    where = "targets[0]" if table == "target" else "source"
    assert f"{where}: timeout must be between 100ms and 10m" in err, err


def test_a_key_pasted_into_the_protected_list_is_not_repeated(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """A key pasted into `protected` (the wrong line of the file) was quoted back as
    "'sk-…' is not an email address"; a value without an @ is not repeated now, an
    address with a typo still is."""
    pasted = "sk-admin-PASTEDintoPROTECTED0123456789"
    config = write(tmp_path, tail=f'[safety]\nprotected = ["{pasted}", "ops@example"]')
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, "")
    assert "safety.protected[0]: the value given is not an email address" in err, err
    assert "safety.protected[1]: 'ops@example' is not an email address" in err, err
    assert traces(pasted, err) == [], err


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "--limit", "99999999999999999999"],
        ["runs", "--limit", "1" + "0" * 5000],
        ["sync", "--dry-run", "--allow-removals", "99999999999999999999"],
        ["sync", "--allow-additions", "1000000001"],
    ],
)
def test_a_number_too_large_is_a_usage_error(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    organization: OpenAIEmulator,
    args: list[str],
) -> None:
    """`runs --limit 99999999999999999999` reached SQLite, which cannot hold it: an
    OverflowError traceback with exit 1, after the state database was opened. A number
    over a billion is a usage error now (64, nothing read)."""
    config = write(tmp_path, base_url=organization.base_url)
    orgsync(capfd, "--config", str(config), "sync", "--dry-run")  # a database to read
    before = (tmp_path / "state.db").stat().st_mtime_ns
    code, out, err = orgsync(capfd, "--config", str(config), *args)
    assert (code, out) == (EXIT_USAGE, ""), err
    assert "usage error: argument --" in err and "must be at most 1,000,000,000" in err, err
    assert (tmp_path / "state.db").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sync", "--dry-run", "--plan", "p.json"], "--plan applies a reviewed plan"),
        (["sync", "--plan-out", "p.json"], "--plan-out writes a plan for review"),
        (["sync", "--incremental", "--only", "ada@example.com"], "--incremental cannot"),
        (["sync", "--only", "ada@example.com", "--plan", "p.json"], "--only reconciles"),
        (["sync", "--dry-run", "--allow-removals", "-1"], "must be 0 or more"),
        (["sync", "--dry-run", "--only", "a b@example.com"], "is not an email address"),
        (["sync", "--dry-run", "--bogus"], "unrecognized arguments: --bogus"),
        (["runs", "--limit", "0"], "must be 1 or more"),
        (["status", "--log-format", "xml"], "invalid choice: 'xml'"),
        (["synk", "--dry-run"], "invalid choice: 'synk'"),
    ],
)
def test_held_every_usage_error_exits_64_not_changes_pending(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    args: list[str],
    says: str,
) -> None:
    """Held: conflicting or bad options exit 64 (never 2, "changes pending", which a
    script reads as a plan to apply), say what is wrong and read nothing."""
    config = write(tmp_path)
    code, out, err = orgsync(capfd, "--config", str(config), *args)
    assert (code, out) == (EXIT_USAGE, ""), err
    assert says in err, err
    assert not (tmp_path / "state.db").exists()


@pytest.mark.parametrize(
    ("tail", "says"),
    [
        (
            "[safety]\nmax_removal = 3",
            "safety.max_removal: unknown key; did you mean max_removals?",
        ),
        ("[safety]\nmax_removals = -1", "safety.max_removals: must be at least 0"),
        ("[safety]\nmax_removal_ratio = 5", "safety.max_removal_ratio: must be at most 1"),
        ("[safety]\nmax_removal_ratio = nan", "safety.max_removal_ratio: must be at most 1"),
        ('[safety]\nremoval_grace = "-5s"', "is not a duration"),
        ('[schedule]\ninterval = "0s"', "interval must be at least 1s"),
        (
            '[schedule]\ninterval = "1h"\nfull_interval = "30m"',
            "full_interval must not be shorter than interval",
        ),
        ("[safety]\n[safety]", "Cannot declare ('safety',) twice"),
        ('[server]\nwebhook_secret = "whsec-PASTED"', "a secret never sits in the configuration"),
        ('[safety]\ndefault_role = "owner"', "default_role belongs in [[targets]]"),
    ],
)
def test_held_toml_pitfalls_are_refused_by_key_with_exit_1(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None, tail: str, says: str
) -> None:
    """Held: a typo'd key, a negative or out-of-range limit, NaN, a duplicated table, a
    secret written inline, a key in the wrong table: refused before anything runs, exit
    1 (never 2), naming the key; a pasted secret is not repeated."""
    config = write(tmp_path, tail=tail)
    code, out, err = orgsync(capfd, "--config", str(config), "sync", "--dry-run")
    assert (code, out) == (1, ""), err
    assert says in err, err
    assert "whsec-PASTED" not in err
    assert not (tmp_path / "state.db").exists()


def test_held_a_target_key_written_under_its_role_rule_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """Held: TOML puts every key after `[[targets.roles]]` into that rule, so a target
    key written below it (`on_removal = "suspend"`) would silently not apply if unknown
    keys were ignored; it is refused, saying where it belongs."""
    rule = '[[targets.roles]]\ngroup = "openai-users"\nrole = "owner"\non_removal = "suspend"'
    config = write(tmp_path, target=rule)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    assert "targets[0].roles[0].on_removal: unknown key here; on_removal belongs in" in err


# --------------------------------------------------------------------------- one organization


def _second_target(url: str, role: str = "owner") -> str:
    return f"""
[[targets]]
name = "openai-again"
type = "openai"
base_url = "{url}"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "{role}"
scope_groups = ["openai-*"]
"""


def test_one_organization_at_two_spellings_of_its_address_is_refused(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    organization: OpenAIEmulator,
) -> None:
    """One organization configured twice, its address written `localhost` in one table
    and `127.0.0.1` in the other, passed as two organizations: measured on the emulator,
    each sync replaced the other's invitation (a new e-mail to the person every run) and
    flipped the role, reader then owner, while both said "in sync (exit 0)"; the state
    database's twin check did not see it either (it compares addresses as written).
    Refused now before anything runs, naming both targets."""
    url = organization.base_url
    assert "127.0.0.1" in url
    alias = url.replace("127.0.0.1", "localhost")
    config = write(tmp_path, base_url=url, target=_second_target(alias))
    before = organization.state.invites()
    for command in (["validate", "--offline"], ["sync"]):
        code, out, err = orgsync(capfd, "--config", str(config), *command)
        assert (code, out) == (1, ""), (out, err)
        assert "targets openai-test and openai-again are the same organization" in err, err
    assert organization.state.invites() == before
    assert not (tmp_path / "state.db").exists()


@pytest.mark.parametrize(
    "second",
    [
        "https://api.openai.com:443/v1",
        "https://api.openai.com./v1",
        "https://api.openai.com//v1/",
    ],
)
def test_a_default_port_a_final_dot_or_a_double_slash_is_the_same_address(
    tmp_path: Path, second: str
) -> None:
    """The same, written with the scheme's own port, a fully qualified host's final dot
    or a doubled slash."""
    first = "https://api.openai.com/v1"
    text = write(tmp_path, base_url=first, target=_second_target(second)).read_text()
    (tmp_path / "orgsync.toml").write_text(text.replace("allow_plaintext = true\n", ""))
    with pytest.raises(ConfigError, match="are the same organization"):
        load_config(tmp_path / "orgsync.toml")


def test_held_another_port_is_another_organization(tmp_path: Path) -> None:
    """Held (the other side): the same host at another port, or another host, is
    another organization, as are the same address with another key."""
    write(tmp_path, target=_second_target("https://api.openai.example:8443/v1"))
    assert len(load_config(tmp_path / "orgsync.toml").targets) == 2


# --------------------------------------------------------------------------- --target


def test_runs_of_a_mistyped_target_is_a_usage_error_not_an_empty_history(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    organization: OpenAIEmulator,
) -> None:
    """`orgsync runs --target openai-tset` answered "No runs recorded yet" (exit 0): the
    operator reads that the target never ran. A name neither configured nor in the
    history is a usage error now; a target gone from the configuration still shows
    its history."""
    config = write(tmp_path, base_url=organization.base_url)
    code, _, err = orgsync(capfd, "--config", str(config), "sync", "--dry-run")
    assert code == 2, err
    code, out, err = orgsync(capfd, "--config", str(config), "runs", "--target", "openai-tset")
    assert (code, out) == (EXIT_USAGE, ""), err
    assert "--target openai-tset: no such target, in the configuration (openai-test)" in err
    config.write_text(config.read_text().replace('name = "openai-test"', 'name = "renamed"'))
    code, out, err = orgsync(capfd, "--config", str(config), "runs", "--target", "openai-test")
    assert code == 0, err
    assert "openai-test" in out and "dry-run" in out
    code, out, err = orgsync(capfd, "--config", str(config), "runs", "--target", "renamed")
    assert (code, out.strip().lower()) == (0, "no runs recorded yet"), err


def test_a_target_name_typed_with_terminal_escapes_is_echoed_inert(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """`--target` is repeated by its "no such target" error; an escape sequence in it
    (pasted from a colored listing) reached the terminal as a command. Shown escaped."""
    config = write(tmp_path)
    for command in (["sync", "--dry-run"], ["explain", "ada@example.com"], ["runs"]):
        code, out, err = orgsync(
            capfd, "--config", str(config), *command, "--target", "\x1b[2Jprod"
        )
        assert (code, out) == (EXIT_USAGE, ""), err
        assert "--target \\x1b[2Jprod: no such target" in err, err
        assert "\x1b" not in err


# --------------------------------------------------------------------------- TLS off


def _keycard(base_url: str, token_url: str) -> str:
    return f"""
[[targets]]
name = "keycard-test"
type = "keycard"
base_url = "{base_url}"
token_url = "{token_url}"
client_id = "sa_orgsync"
client_secret_env = "{KEY_ENV}"
organization_id = "org-a"
allow_plaintext = true
max_attempts = 1
"""


def test_every_plain_http_address_is_warned_about_at_start(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    organization: OpenAIEmulator,
) -> None:
    """`allow_plaintext = true` lets a table use `http://`; the start must say so for
    every plain address (SPEC: "logs a warning at start"). Keycard's `token_url`, where
    the client secret is sent, went unsaid when only it was plain HTTP, as did an
    address written `HTTP://`. Each is named by its key now."""
    closed = "127.0.0.1:9"  # discard: refused at once, nothing listens
    config = write(
        tmp_path,
        base_url=organization.base_url.replace("http://", "HTTP://"),
        tail=_keycard(f"https://{closed}", f"http://{closed}/oauth/token"),
    )
    code, out, err = orgsync(capfd, "--config", str(config), "--log-format", "json", "validate")
    assert code == 1, (out, err)  # the Keycard organization is not there
    warnings = [json.loads(line) for line in err.splitlines() if '"target.plaintext"' in line]
    said = {(w["target"], w["key"]) for w in warnings}
    assert said == {("openai-test", "base_url"), ("keycard-test", "token_url")}, err
    assert API_KEY not in out + err


def test_held_a_plain_http_source_is_warned_about_at_start(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """Held: a network source reached over plain HTTP says so at start (`validate
    --offline` builds the source, contacting nothing)."""
    source = (
        'type = "scim"\nurl = "http://127.0.0.1:9/scim/v2"\n'
        f'token_env = "{KEY_ENV}"\nallow_plaintext = true\nmax_attempts = 1'
    )
    config = write(tmp_path, source=source)
    code, _, err = orgsync(
        capfd, "--config", str(config), "--log-format", "json", "validate", "--offline"
    )
    assert code == 0, err
    assert '"event": "source.plaintext"' in err and "http://127.0.0.1:9/scim/v2" in err, err


# --------------------------------------------------------------------------- wrong kinds


@pytest.mark.parametrize(
    ("tail", "says"),
    [
        (
            "[safety]\nremoval_grace = true",
            'safety: removal_grace must be a duration such as "30s"',
        ),
        (
            "[safety]\nmax_removal_ratio = true",
            "safety: max_removal_ratio must be a number, not true",
        ),
        ("[safety]\nmax_removals = false", "safety: max_removals must be a number, not false"),
        ("[schedule]\njitter = false", "schedule: jitter must be a duration"),
        ("[server]\nmax_connections = true", "server: max_connections must be a number, not true"),
    ],
)
def test_true_or_false_where_a_number_belongs_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None, tail: str, says: str
) -> None:
    """TOML's `true` where a number or a duration belongs was read as 1: `removal_grace
    = true` (meaning "yes, a grace") was a grace of one second, `max_removal_ratio =
    true` a ratio of 100%, the ratio guard off; `false` was 0. Refused, naming the key."""
    config = write(tmp_path, tail=tail)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    assert says in err, err


def test_held_text_where_true_or_false_belongs_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """Held: `remove_unmanaged = "false"` (text, which a lax reader takes as true
    or as false depending on its spelling) is refused; so is `allow_plaintext = "yes"`."""
    for tail, says in (
        ('[safety]\nremove_unmanaged = "false"', "safety.remove_unmanaged: must be true or false"),
    ):
        config = write(tmp_path, tail=tail)
        code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
        assert (code, out) == (1, ""), err
        assert says in err, err
    config = write(tmp_path, target='allow_plaintext = "yes"').read_text()
    (tmp_path / "orgsync.toml").write_text(config.replace("allow_plaintext = true\n", "", 1))
    code, out, err = orgsync(capfd, "--config", str(tmp_path / "orgsync.toml"), "validate")
    assert (code, out) == (1, ""), err
    assert "targets[0].allow_plaintext: must be true or false" in err, err


@pytest.mark.parametrize(
    ("table", "key"),
    [("target", "verify = false"), ("target", "insecure = true"), ("source", "tls_verify = false")],
)
def test_a_key_turning_tls_verification_off_is_refused_saying_what_to_do(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None, table: str, key: str
) -> None:
    """`verify = false`, as other tools spell it, must never quietly turn certificate
    checks off. It was refused as a bare "unknown key" (held: nothing was turned off);
    the refusal now says that verification cannot be turned off and what to use
    instead: ca_file for a private CA, allow_plaintext for a test rig."""
    if table == "target":
        config = write(tmp_path, target=key)
    else:
        source = (
            'type = "scim"\nurl = "https://idp.example.com/scim/v2"\n'
            f'token_env = "{KEY_ENV}"\n{key}'
        )
        config = write(tmp_path, source=source)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    name = key.split(" ", maxsplit=1)[0]
    assert f"{name}: unknown key: TLS verification cannot be turned off" in err, err
    assert "ca_file" in err and "allow_plaintext = true" in err


@pytest.mark.parametrize(
    ("table", "url"),
    [
        ("target", "https://scim.example.com/scim/v2?api_key=PASTEDsecretVALUE0123456789"),
        ("target", "https://scim.example.com/scim/v2?tenant=a&access_token=PASTEDsecretVALUE0123"),
        ("source", "https://idp.example.com/scim/v2#token=PASTEDsecretVALUE0123456789"),
    ],
)
def test_a_credential_in_a_url_query_is_refused_unshown(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None, table: str, url: str
) -> None:
    """Some APIs take their key in the query (`?api_key=`, `?access_token=`, Azure's
    `?code=`); pasted so into `base_url` or a source `url`, the key sat in the file and
    went wherever the address goes (logs, `status`, the state database's identity of
    the organization), while `user:password@` had been refused. Refused now, naming the
    parameter, never its value."""
    if table == "target":
        config = write(tmp_path, base_url=url)
    else:
        source = f'type = "scim"\nurl = "{url}"\ntoken_env = "{KEY_ENV}"'
        config = write(tmp_path, source=source)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    assert "carries a credential in its query" in err, err
    assert traces("PASTEDsecretVALUE0123456789", err) == [], err


def test_held_an_ordinary_query_parameter_is_accepted(tmp_path: Path) -> None:
    """Held (the other side): a parameter that is not a credential stays allowed."""
    write(tmp_path, base_url="https://scim.example.com/scim/v2?tenant=acme&keycard=1")
    assert load_config(tmp_path / "orgsync.toml").targets[0].base_url.endswith("keycard=1")


def test_held_debug_logs_and_every_reading_command_keep_the_key_out(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    organization: OpenAIEmulator,
) -> None:
    """Held: with `-v` (debug logs, JSON), a sync, `validate`, `status`, `explain` and
    `runs` print no trace of the admin key, and the state database holds none."""
    config = write(tmp_path, base_url=organization.base_url)
    seen = []
    for command in (
        ["sync"],
        ["validate"],
        ["status", "--json"],
        ["explain", "ada@example.com"],
        ["runs"],
    ):
        code, out, err = orgsync(
            capfd, "--config", str(config), "-v", "--log-format", "json", *command
        )
        assert code == 0, (command, out, err)
        seen.append(out + err)
    assert any('"level": "debug"' in text for text in seen)
    database = _state_files(tmp_path)
    for text in (*seen, database):
        assert traces(API_KEY, text) == []


def test_a_trailing_line_break_in_a_name_is_not_taken_for_a_name(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """Python's `$` matches before a final line break: `api_key_env = "KEY\\n"` passed
    as a variable name (then named no variable, its "not set" message broken over two
    lines), and a key `"0\\n"` was printed bare, its line break starting a line of its
    own that reads as another message (found by tests/config/test_config_properties.py).
    Names are matched whole now."""
    config = write(tmp_path, key=f'api_key_env = "{KEY_ENV}\\n"')
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    assert "targets[0].api_key_env: must be the NAME of an environment variable" in err, err
    config = write(tmp_path, tail='"0\\n" = 1')
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    assert 'state."0\\n": unknown key' in err, err


# --------------------------------------------------------------------------- who may edit it


def test_a_configuration_anyone_on_the_host_can_edit_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """An attacker with any local account and a configuration writable by all (0666, or
    in a folder writable by all without the sticky bit, where they can rename their own
    file over it) points `base_url` at their server: the next run sends them the admin
    key. orgsync read such a file without a word. Refused now, saying why and what to
    change; a folder with the sticky bit (as /tmp) and a group-writable file (a group
    the administrator chose) are accepted."""
    config = write(tmp_path)
    config.chmod(0o666)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert (code, out) == (1, ""), err
    assert "writable by every account on this host" in err and "chmod o-w" in err, err
    config.chmod(0o664)
    assert orgsync(capfd, "--config", str(config), "validate", "--offline")[0] == 0
    tmp_path.chmod(0o777)
    try:
        code, out, err = orgsync(capfd, "--config", str(config), "sync", "--dry-run")
        assert (code, out) == (1, ""), err
        assert f"in {tmp_path}, a folder every account can write without the sticky" in err
        assert not (tmp_path / "state.db").exists()
        tmp_path.chmod(0o777 | 0o1000)  # sticky: only the owner may replace the file
        assert orgsync(capfd, "--config", str(config), "validate", "--offline")[0] == 0
    finally:
        tmp_path.chmod(0o700)


def test_a_symlink_to_the_configuration_in_an_open_folder_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None
) -> None:
    """The same through a symlink: the link in a folder everyone can write can be
    replaced, whatever the folder of the file it points to."""
    config = write(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "orgsync.toml").symlink_to(config)
    shared.chmod(0o777)
    code, out, err = orgsync(capfd, "--config", str(shared / "orgsync.toml"), "validate")
    assert (code, out) == (1, ""), err
    assert f"in {shared}, a folder every account can write" in err, err


@pytest.mark.parametrize("named", ["orgsync.toml", "directory.json", "./sub/../directory.json"])
def test_a_state_path_naming_the_configuration_or_the_directory_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], environ: None, named: str
) -> None:
    """`[state] path = "orgsync.toml"` (the `path` line of `[source]` copied, or the
    file's own name): the run refused the file as "unreadable, not a database" and told
    the operator to move it aside and run again to start a new database, which moves
    the configuration (or the directory export) away. Refused now as a configuration
    mistake naming the key; both files are left as they were."""
    (tmp_path / "sub").mkdir()
    config = write(tmp_path)
    config.write_text(config.read_text().replace('path = "state.db"', f'path = "{named}"'))
    before = {f: (tmp_path / f).read_bytes() for f in ("orgsync.toml", "directory.json")}
    code, out, err = orgsync(capfd, "--config", str(config), "sync", "--dry-run")
    assert (code, out) == (1, ""), err
    what = "the configuration file itself" if named == "orgsync.toml" else "the [source]"
    assert f"state.path: names {what}" in err, err
    assert "move it aside" not in err
    assert {f: (tmp_path / f).read_bytes() for f in before} == before


# --------------------------------------------------------------------------- [server] secrets


def test_validate_checks_the_webhook_secrets_the_daemon_needs_to_start(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    environ: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`[server] webhook_secret_env` naming a variable the service does not have: the
    daemon refuses to start (its secrets are resolved first), but `validate`, which an
    administrator runs before deploying, checked no `[server]` secret and said all was
    well (exit 0). It checks them now, as the daemon's start does, never showing a
    value; a short one (guessable: whoever guesses it can send webhooks) is a warning."""
    tail = (
        '[server]\nwebhook_secret_env = "ORGSYNC_TEST_HOOK"\n'
        f'okta_authorization_file = "{tmp_path / "okta-auth"}"'
    )
    config = write(tmp_path, tail=tail)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert code == 1, (out, err)
    assert (
        "server webhook_secret: FAILED: server.webhook_secret_env: environment variable "
        "ORGSYNC_TEST_HOOK is not set or empty"
    ) in out
    assert (
        f"server okta_authorization: FAILED: server.okta_authorization_file: cannot read {tmp_path / 'okta-auth'}"
        in out
    )
    monkeypatch.setenv("ORGSYNC_TEST_HOOK", "hunter2")
    (tmp_path / "okta-auth").write_text("Bearer 0123456789abcdef0123456789abcdef\n")
    (tmp_path / "okta-auth").chmod(0o600)
    code, out, err = orgsync(capfd, "--config", str(config), "validate", "--offline")
    assert code == 0, (out, err)
    assert "server webhook_secret: WARNING: shorter than 16 characters" in out
    assert "server okta_authorization: present" in out
    assert "hunter2" not in out + err and "0123456789abcdef" not in out + err
