"""Every configuration model, every kind of mistake: the message names the key, its line,
and what to write, in the operator's words (never pydantic's), and never repeats a secret.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orgsync.config import load_config
from orgsync.config_errors import key_lines
from orgsync.core.errors import ConfigError

SOURCES = {
    "file": 'type = "file"\npath = "directory.json"',
    "scim": 'type = "scim"\nurl = "https://idp.example.com/scim/v2"\ntoken_env = "IDP_TOKEN"',
    "ldap": (
        'type = "ldap"\nurl = "ldaps://ldap.example.com"\nbind_dn = "cn=orgsync"\n'
        'bind_password_env = "LDAP_PW"\nusers_base = "ou=people"\ngroups_base = "ou=groups"'
    ),
    "okta": 'type = "okta"\nurl = "https://example.okta.com"\ntoken_env = "OKTA_TOKEN"',
    "entra": (
        'type = "entra"\ntenant_id = "t"\nclient_id = "c"\nclient_secret_env = "ENTRA_SECRET"'
    ),
    "google": ('type = "google"\nsubject = "admin@example.com"\ncredentials_file = "google.json"'),
}

TARGET = """
[[targets]]
name = "openai-prod"
type = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_ADMIN_KEY"
"""

PYDANTIC_WORDS = re.compile(
    r"Input should|Value error|Extra inputs|validation error|Field required|type=|"
    r"pydantic|String should|instance of|valid dictionary|Unable to extract tag",
)


def document(
    source: str = "file", *, source_extra: str = "", target_extra: str = "", tail: str = ""
) -> str:
    return f"[source]\n{SOURCES[source]}\n{source_extra}\n{TARGET}{target_extra}\n{tail}"


def refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "orgsync.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert not PYDANTIC_WORDS.search(message), message
    return message


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_type_is_valid_as_written(tmp_path: Path, source: str) -> None:
    path = tmp_path / "orgsync.toml"
    path.write_text(document(source), encoding="utf-8")
    assert load_config(path).source.type == source


# (source type, extra source keys, what the message must say)
SOURCE_MISTAKES = [
    ("file", "paht = 'x.json'", "source.paht: unknown key; did you mean path?"),
    ("scim", "page_size = 0", "source.page_size: must be at least 1"),
    ("scim", "page_size = 'many'", "source.page_size: must be a whole number"),
    ("scim", "timeout = 'soon'", "source.timeout: 'soon' is not a duration"),
    ("scim", "allow_plaintext = 'yes'", "source.allow_plaintext: must be true or false"),
    ("scim", "token = 'eyJhbGciOi'", "source.token: a secret never sits in the configuration file"),
    ("scim", "max_attempts = 99", "source.max_attempts: must be at most 20"),
    ("ldap", "bind_password = 'hunter2'", "give its name as bind_password_env"),
    ("ldap", "flavor = 'novell'", "'novell' is not allowed; use one of: openldap, ad"),
    ("ldap", "nested_group = 'client'", "did you mean nested_groups?"),
    ("okta", "page_size = 5000", "source.page_size: must be at most 1000"),
    ("entra", "client_secret = 's3cr3t~value'", "give its name as client_secret_env"),
    (
        "entra",
        "graph_url = 'graph.microsoft.com'",
        "graph_url = 'graph.microsoft.com' is not an http(s) URL",
    ),
    ("google", "customer = 5", "source.customer: must be text in quotes"),
    (
        "google",
        "token_url = 'https://user:pw@oauth2.example.com/'",
        "token_url carries a user name or password",
    ),
]


@pytest.mark.parametrize(("source", "extra", "says"), SOURCE_MISTAKES)
def test_source_mistakes(tmp_path: Path, source: str, extra: str, says: str) -> None:
    text = document(source, source_extra=extra)
    message = refusal(tmp_path, text)
    assert says in message
    assert f"line {line_of(text, extra.split(' ', maxsplit=1)[0] + ' =')}:" in message
    assert "hunter2" not in message and "s3cr3t" not in message and "eyJhbGciOi" not in message


def test_a_missing_required_source_key_is_named(tmp_path: Path) -> None:
    text = document("ldap").replace('users_base = "ou=people"\n', "")
    assert "source.users_base: required key users_base is missing" in refusal(tmp_path, text)
    text = "[source]\npath = 'x'\n" + TARGET
    assert "source: type is required: one of file, scim, ldap, okta, entra, google" in refusal(
        tmp_path, text
    )


def test_an_unknown_source_type_lists_the_valid_ones(tmp_path: Path) -> None:
    text = "[source]\ntype = 'azuread'\n" + TARGET
    message = refusal(tmp_path, text)
    assert "line 2: source: type = 'azuread' is not a source type" in message
    assert "file, scim, ldap, okta, entra, google" in message


TARGET_MISTAKES = [
    ('scope_groups = "x"', 'must be a list of group patterns, e.g. scope_groups = ["openai-*"]'),
    ('scope_groups = ["eng-[abc"]', "'[' opens a character class that is never closed"),
    ('scope_groups = [""]', "a group pattern must not be empty"),
    ('type2 = "openai"', "did you mean type?"),
    ("max_removals = 3", "unknown key here; max_removals belongs in [safety]"),
    ('api_key = "sk-admin-abc123"', "give its name as api_key_env"),
    ('on_removal = "delete"', "'delete' is not allowed; use one of: remove, suspend"),
    ('scim_dialect = "okta"', "use one of: auto, strict, aws, azure, loose"),
    ("max_concurrency = 0", "targets[0].max_concurrency: must be at least 1"),
    ("requests_per_second = 0", "targets[0].requests_per_second: must be more than 0"),
    ('timeout = "30 seconds"', "targets[0].timeout: '30 seconds' is not a duration"),
    ("timeout = [30]", 'targets[0].timeout: must be a duration such as "30s"'),
    ('roles = "owner"', "targets[0].roles: must be [[targets.roles]] tables"),
    ('invite_projects = [{ id = "" }]', "targets[0].invite_projects[0].id: must not be empty"),
    ('invite_projects = [{ id = "p", role = "admin" }]', "use one of: member, owner"),
]


@pytest.mark.parametrize(("extra", "says"), TARGET_MISTAKES)
def test_target_mistakes(tmp_path: Path, extra: str, says: str) -> None:
    text = document(target_extra=extra)
    message = refusal(tmp_path, text)
    assert says in message
    assert f"line {line_of(text, extra.split(' ', maxsplit=1)[0] + ' =')}:" in message
    assert "sk-admin-abc123" not in message


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("nirvana", "Nirvana Labs has no target type: its API cannot invite, change or remove"),
        ("archera", "Archera has no target type: its API cannot list, invite or remove"),
        ("okta", "type = 'okta' is not a target type; use one of: openai, keycard, scim"),
    ],
)
def test_an_unknown_target_type_lists_the_valid_ones(tmp_path: Path, name: str, says: str) -> None:
    text = document().replace('type = "openai"', f'type = "{name}"')
    message = refusal(tmp_path, text)
    assert says in message
    assert "openai, keycard, scim" in message
    if name != "okta":
        assert 'see README, "Supported targets"' in message


def test_rule_tables(tmp_path: Path) -> None:
    text = document(tail='[[targets.roles]]\ngroup = "eng"\nrol = "owner"\n')
    message = refusal(tmp_path, text)
    assert (
        f"line {line_of(text, 'rol =')}: targets[0].roles[0].rol: unknown key; did you mean role?"
        in message
    )
    assert "targets[0].roles[0].role: required key role is missing" in message
    text = document(tail='[[targets.groups]]\nsource = "eng-["\n')
    assert "targets[0].groups[0].source: group pattern 'eng-['" in refusal(tmp_path, text)
    text = document(tail='[[targets.groups]]\nsource = "eng"\nname = "{team}"\n')
    assert "the only placeholder a group name may use is {source}" in refusal(tmp_path, text)


def test_the_second_target_is_located_by_its_own_lines(tmp_path: Path) -> None:
    second = TARGET.replace("openai-prod", "b").replace('"OPENAI_ADMIN_KEY"', '"K"')
    text = document() + second + "max_concurency = 2\n"
    message = refusal(tmp_path, text)
    assert (
        f"line {line_of(text, 'max_concurency')}: targets[1].max_concurency: unknown key; did you mean max_concurrency?"
        in message
    )


SECTION_MISTAKES = [
    ("[safety]\nmax_removal = 3", "safety.max_removal: unknown key; did you mean max_removals?"),
    ("[safety]\nmax_removals = -1", "safety.max_removals: must be at least 0"),
    ("[safety]\nmax_removal_ratio = 2", "safety.max_removal_ratio: must be at most 1"),
    ('[safety]\nremoval_grace = "a week"', "safety.removal_grace: 'a week' is not a duration"),
    ('[safety]\nprotected = "ceo@example.com"', "must be a list of email addresses"),
    ('[safety]\nprotected = ["ceo@examplecom"]', "safety.protected[0]: 'ceo@examplecom' is not an"),
    ('[safety]\nremove_unmanaged = "no"', "safety.remove_unmanaged: must be true or false"),
    ("[state]\npath = 3", 'state.path: must be a file path in quotes, e.g. "directory.json"'),
    ('[state]\nlease_tl = "10m"', "did you mean lease_ttl?"),
    (
        '[schedule]\ninterval = "99999999999999d"',
        "schedule.interval: '99999999999999d' is too long a duration",
    ),
    ("[schedule]\nquarantine_after = 0", "schedule.quarantine_after: must be at least 1"),
    ('[schedule]\ninterval = "0s"', "interval must be at least 1s"),
    ('[server]\nlisten = "8080"', "listen = '8080' is not host:port"),
    ('[server]\nwebhook_secret = "whsec_live"', "give its name as webhook_secret_env"),
    ('[server]\ndebounce = "5m"', "debounce must be between 0s and 60s"),
    ("[safty]\nmax_removals = 3", "safty: unknown key; did you mean safety?"),
]


@pytest.mark.parametrize(("tail", "says"), SECTION_MISTAKES)
def test_section_mistakes(tmp_path: Path, tail: str, says: str) -> None:
    message = refusal(tmp_path, document(tail=tail))
    assert says in message
    assert "whsec_live" not in message


def test_missing_tables(tmp_path: Path) -> None:
    assert "source: required: add a [source] table" in refusal(tmp_path, TARGET)
    assert "targets: required: add at least one [[targets]] table" in refusal(
        tmp_path, f"[source]\n{SOURCES['file']}\n"
    )
    assert "line 1: safety: must be a [safety] table, not a single value" in refusal(
        tmp_path, f"safety = 3\n[source]\n{SOURCES['file']}\n{TARGET}"
    )
    assert "targets: must be [[targets]] tables" in refusal(
        tmp_path, f'targets = "openai"\n[source]\n{SOURCES["file"]}\n'
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[source]\ntype = \n", "line 2, column 8: not valid TOML"),
        ('[source]\ntype = "file"\n[source]\n', "line 3, column 8: not valid TOML"),
        ('[source\ntype = "file"\n', "line 1, column 8: not valid TOML"),
    ],
)
def test_toml_syntax_errors_name_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    assert where in refusal(tmp_path, text)


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "orgsync.toml"
    path.write_bytes(b"[source]\ntype = '\xff'\n")
    with pytest.raises(ConfigError, match=r"orgsync\.toml: not UTF-8 text \(byte 17"):
        load_config(path)


def test_key_lines_follow_arrays_of_tables() -> None:
    text = (
        '[source]\ntype = "file"\n[[targets]]\nname = "a"\n[[targets.roles]]\ngroup = "x"\n'
        '[[targets]]\nname = "b"\n[[targets.roles]]\ngroup = "y"\n[[targets.roles]]\n'
        'group = "z"\nx = """\nname = 1\n"""\n[safety]\nmax_removals = 1\n'
    )
    lines = key_lines(text)
    assert lines[("source", "type")] == 2
    assert lines[("targets", 1, "name")] == 8
    assert lines[("targets", 1, "roles", 1, "group")] == 12
    assert ("targets", 1, "roles", 1, "name") not in lines, "inside a multi-line string"
    assert lines[("safety", "max_removals")] == 17
