"""The connector registry: each `[[targets]]` table gets its type's model, loaded on first
use; the built-in models keep accepting what every built-in type accepted before.

The entry-point path (a package installed beside orgsync) is in
tests/targets/test_third_party_connector.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orgsync import connectors
from orgsync.config import TargetConfig, load_config
from orgsync.core.errors import ConfigError
from orgsync.targets.keycard.connector import KeycardTargetConfig
from orgsync.targets.openai.connector import OpenAITargetConfig
from orgsync.targets.scim.connector import ScimTargetConfig

SOURCE = '[source]\ntype = "file"\npath = "directory.json"\n'
OPENAI = """
[[targets]]
name = "o"
type = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_KEY"
"""
KEYCARD = """
[[targets]]
name = "k"
type = "keycard"
base_url = "https://keycard.example/api"
client_id = "sa_1"
client_secret_env = "KEYCARD_SECRET"
organization_id = "org_1"
"""
SCIM = """
[[targets]]
name = "s"
type = "scim"
base_url = "https://scim.example/v2"
api_key_env = "SCIM_TOKEN"
"""


def load(tmp_path: Path, text: str) -> list[TargetConfig]:
    path = tmp_path / "orgsync.toml"
    path.write_text(SOURCE + text, encoding="utf-8")
    return list(load_config(path).targets)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_each_table_gets_its_type_s_model(tmp_path: Path) -> None:
    targets = load(tmp_path, OPENAI + KEYCARD + SCIM)
    assert [type(t) for t in targets] == [OpenAITargetConfig, KeycardTargetConfig, ScimTargetConfig]
    assert targets[1].model_dump()["client_id"] == "sa_1"  # dumped as its own model


def test_reading_a_configuration_imports_only_the_connectors_it_names(tmp_path: Path) -> None:
    (tmp_path / "orgsync.toml").write_text(SOURCE + OPENAI, encoding="utf-8")
    probe = (
        "import sys\nfrom pathlib import Path\nimport orgsync.cli\n"
        "before = sorted(m for m in sys.modules if m.startswith('orgsync.targets'))\n"
        "from orgsync.config import load_config\n"
        f"load_config(Path({str(tmp_path / 'orgsync.toml')!r}))\n"
        "after = sorted(m for m in sys.modules if m.startswith(('orgsync.targets', 'scim2')))\n"
        "import json\nprint(json.dumps([before, after]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    before, after = json.loads(out)
    assert before == []  # the command line alone imports no connector
    assert "orgsync.targets.openai.connector" in after
    assert not [m for m in after if "scim" in m or "keycard" in m]
    assert "orgsync.targets.openai.target" not in after  # the client waits for build


def test_the_source_table_gets_its_type_s_model_and_reader_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "orgsync.toml"
    path.write_text(
        '[source]\ntype = "ldap"\nurl = "ldaps://ldap.example.com"\nbind_dn = "cn=o"\n'
        'bind_password_env = "PW"\nusers_base = "ou=p"\ngroups_base = "ou=g"\n' + OPENAI,
        encoding="utf-8",
    )
    probe = (
        "import sys, json\nfrom pathlib import Path\nfrom orgsync.config import load_config\n"
        f"config = load_config(Path({str(path)!r}))\n"
        "print(json.dumps([type(config.source).__name__,"
        " sorted(m for m in sys.modules if m.startswith(('orgsync.sources', 'ldap3')))]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    model, imported = json.loads(out)
    assert model == "LdapSourceConfig"
    assert imported == ["orgsync.sources", "orgsync.sources.ldap_connector"]  # not ldap3 yet


def test_keys_of_another_built_in_type_still_load_as_before(tmp_path: Path) -> None:
    """A file that loaded before the types had models of their own still loads."""
    extra = 'scim_dialect = "aws"\nmax_patch_operations = 50\norganization_id = "x"\n'
    (target,) = load(tmp_path, OPENAI + extra)
    assert isinstance(target, OpenAITargetConfig)
    message = refusal(tmp_path, OPENAI + 'scim_dialect = "okta"\n')
    assert "use one of: auto, strict, aws, azure, loose" in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            KEYCARD + 'api_key_env = "K"\n',
            "keycard targets authenticate with client_id/client_secret",
        ),
        (KEYCARD.replace('client_id = "sa_1"\n', ""), "keycard targets need client_id and"),
        (SCIM + 'default_role = "reader"\n', "scim targets have no organization roles"),
        (OPENAI.replace('api_key_env = "OPENAI_KEY"\n', ""), "api_key_env or api_key_file is"),
        (OPENAI + 'client_id = "sa_1"\n', "client_id is a key of type = keycard targets"),
        (SCIM + "invite_projectz = []\n", "did you mean invite_projects?"),
        (OPENAI + "max_removals = 3\n", "max_removals belongs in [safety]"),
    ],
)
def test_each_type_s_rules_in_the_operator_s_words(tmp_path: Path, text: str, says: str) -> None:
    message = refusal(tmp_path, text)
    assert says in message
    assert "Value error" not in message and "Extra inputs" not in message


def test_the_built_in_types_are_listed_in_order_and_loaded_once() -> None:
    assert connectors.target_types()[:3] == ["openai", "keycard", "scim"]
    assert connectors.target("scim") is connectors.target("scim")
    builtin = [(f.kind, f.type) for f in connectors.found() if f.origin == "built-in"]
    assert builtin == [
        *[("source", t) for t in ("file", "scim", "ldap", "okta", "entra", "google")],
        *[("target", t) for t in ("openai", "keycard", "scim")],
    ]
    assert connectors.source("ldap") is connectors.source("ldap")
    with pytest.raises(ConfigError, match="'nope' is not a source type; use one of: file"):
        connectors.source("nope")
    with pytest.raises(ConfigError, match="'nope' is not a target type; use one of: openai"):
        connectors.target("nope")


def test_capabilities_are_declared_without_building_a_target() -> None:
    assert connectors.target("keycard").capabilities.groups is False
    assert connectors.target("scim").capabilities.roles is False
    assert connectors.target("openai").capabilities.invites is True


def _declared_anywhere_with(path: list[str]) -> bool:
    """`_declared_anywhere` with `path` as `sys.path`, in this process."""
    saved = sys.path[:]
    sys.path[:] = path
    try:
        return connectors._declared_anywhere()
    finally:
        sys.path[:] = saved


def _dist(folder: Path, name: str, entry_points: str | None) -> None:
    dist = folder / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points is not None:
        (dist / "entry_points.txt").write_text(entry_points, encoding="utf-8")


def test_packages_declaring_no_connector_are_told_apart_without_importlib_metadata(
    tmp_path: Path,
) -> None:
    # Start-up: the registry reads importlib.metadata only when some package may declare
    # a connector. Whenever it may, it must say so, or a connector would go unseen.
    site = tmp_path / "site"
    _dist(site, "plain", "[console_scripts]\nplain = plain:main\n")
    _dist(site, "bare", None)
    (site / "broken.egg-info").write_text("Metadata-Version: 1.0\n")  # PKG-INFO as a file
    assert _declared_anywhere_with([str(site), str(tmp_path / "absent")]) is False
    assert _declared_anywhere_with([str(site), str(SOURCE_ROOT)]) is False

    _dist(site, "acme", "[orgsync.connectors]\ntarget.acme = acme:CONNECTOR\n")
    assert _declared_anywhere_with([str(site)]) is True

    egg = tmp_path / "old.egg"
    (egg / "EGG-INFO").mkdir(parents=True)
    (egg / "EGG-INFO" / "entry_points.txt").write_text("[orgsync.connectors]\nsource.x = x:C\n")
    assert _declared_anywhere_with([str(egg)]) is True
    zipped = tmp_path / "bundle.zip"
    zipped.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: not looked into
    assert _declared_anywhere_with([str(zipped)]) is True


def test_a_finder_of_its_own_sends_the_registry_to_importlib_metadata(tmp_path: Path) -> None:
    class Finder:
        def find_spec(self, *args: object) -> None:
            return None

        def find_distributions(self, *args: object) -> list[object]:
            return []

    site = tmp_path / "site"
    site.mkdir()
    sys.meta_path.append(Finder())
    try:
        assert _declared_anywhere_with([str(site)]) is True
    finally:
        sys.meta_path.pop()
    assert _declared_anywhere_with([str(site)]) is False


SOURCE_ROOT = Path(__file__).resolve().parents[2] / "src"


UNBUILDABLE = """
from typing import Literal

from orgsync.config import TargetConfig
from orgsync.connectors import TargetConnector
from orgsync.core.model import Capabilities


class Opaque:
    pass


class WeirdConfig(TargetConfig):
    type: Literal["weird"]
    handle: Opaque  # no pydantic schema for it: the model cannot be built


CONNECTOR = TargetConnector(
    type="weird",
    settings=WeirdConfig,
    build=lambda config, environ, hooks: None,
    capabilities=Capabilities(),
    credentials=lambda config: [],
)
"""


def test_a_package_whose_model_cannot_be_built_is_refused_when_loaded(tmp_path: Path) -> None:
    # Configuration models build their validators on first use; a foreign one is built
    # when its package is loaded, so that its failure is still the package's refusal.
    site = tmp_path / "site"
    _dist(site, "orgsync-weird", "[orgsync.connectors]\ntarget.weird = orgsync_weird:CONNECTOR\n")
    (site / "orgsync_weird.py").write_text(UNBUILDABLE, encoding="utf-8")
    sys.path.insert(0, str(site))
    connectors.refresh()
    try:
        with pytest.raises(ConfigError) as caught:
            connectors.target("weird")
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("orgsync_weird", None)
        connectors.refresh()
    assert "(orgsync-weird 1.0) cannot be loaded: PydanticSchemaGenerationError" in str(
        caught.value
    )
