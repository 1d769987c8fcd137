"""Checking source addresses: the fast path of `email_problem` against email-validator alone.

Every person a source reports has their address checked (`core.model.email_problem`); a
fresh `orgsync sync` pays for every address once (plain addresses are not cached; only
email-validator's verdicts are, for later passes of the daemon). Prints the CPU time per address (`time.process_time`, fresh process, untraced) of
`email_problem` on N distinct ordinary addresses, of email-validator's full parse of the
same addresses, and what a 100k directory costs each way.

usage: .venv/bin/python bench/email_check.py [N]   (default 20000)
"""

from __future__ import annotations

import sys
import time

from email_validator import validate_email

from orgsync.core.model import email_problem


def per_address(check: object, addresses: list[str]) -> float:
    assert callable(check)
    started = time.process_time()
    for address in addresses:
        check(address)
    return (time.process_time() - started) / len(addresses)


def main(count: int) -> None:
    addresses = [f"first{i}.last+{i % 7}@dept{i % 13}.example{i % 101}.com" for i in range(count)]
    fast = per_address(email_problem, addresses)
    slow = per_address(
        lambda a: validate_email(a, check_deliverability=False, test_environment=True),
        addresses,
    )
    print(f"{count} distinct addresses, CPU per address:")
    print(f"  email_problem (fast path)   {fast * 1e6:7.1f} us   100k: {fast * 1e5:5.2f} s")
    print(f"  email-validator (full)      {slow * 1e6:7.1f} us   100k: {slow * 1e5:5.2f} s")
    print(f"  ratio {slow / fast:.0f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
