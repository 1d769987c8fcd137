"""Test helpers: local fakes of the vendor APIs orgsync talks to, one per vendor.

These are deliberate, supported helpers, not leftovers of orgsync's own test suite: use
them to test a configuration, a connector or a deployment without an account anywhere,
as ``orgsync demo`` and ``orgsync emulate <vendor>`` do. Each serves the vendor's API on
127.0.0.1 over plain HTTP in a background thread, keeps its organization or directory in
memory, checks credentials as the vendor does, and can be told to misbehave (throttling,
failing pages, the transport faults of `orgsync.testing.faults`)::

    from orgsync.testing.openai import OpenAIEmulator

    with OpenAIEmulator(api_key="sk-admin-test") as emulator:  # serving from here on
        emulator.state.add_user("ada@example.com", "owner")
        base_url = emulator.base_url  # a [[targets]] table's base_url

Organization APIs (targets): `orgsync.testing.openai` (the OpenAI Admin API: users,
invitations, roles, groups) and `orgsync.testing.keycard` (Keycard's organization API and
its service-account tokens). Directories (sources): `orgsync.testing.okta`,
`orgsync.testing.entra` (Microsoft Graph and the identity platform's token endpoint) and
`orgsync.testing.google` (the Admin SDK Directory API and the service-account JWT grant).
`orgsync.testing.fleet` serves many OpenAI organizations at once and writes the
configuration of daemon replicas sharing them (the replica test and bench/replicas.py).
`orgsync.testing.postgres` starts a throwaway PostgreSQL server (Debian's initdb and
pg_ctl in a temporary folder) for the test suite's fixtures and bench/replicas.py.

They follow the vendors' published OpenAPI or discovery documents (each module names the
revision) and import nothing of orgsync outside this package, so each stays a fake of
the vendor rather than a mirror of orgsync's own client. Never expose one beyond
loopback: their credentials are whatever the test gives them.
"""
