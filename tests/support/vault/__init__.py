"""A Vault test server: the parts of Vault's HTTP API the platform and hvac use, on loopback.

No Vault or OpenBao binary can be installed here (dependencies.md §1), and mocking at the
requests layer would skip HTTP semantics, so tests talk to this server through hvac itself:
KV version 2 (data, metadata, delete/undelete/destroy, check-and-set, LIST), token auth by
`X-Vault-Token`, AppRole (roles, role ids, secret ids, login, token TTLs), token
lookup/revoke, `sys/health`, `sys/mounts` and a PKI engine that issues real certificates
from a CA it generates. Errors have Vault's status codes and `{"errors": [...]}` bodies.

Run it as `python -m tests.support.vault --port P --token T`; tests use the `vault_server`
fixture (`tests.support.vault.fixture`). The package imports no aiohttp: the server module
must be imported with `AIOHTTP_NO_EXTENSIONS=1` (hvac sends `LIST`, which aiohttp's C
parser rejects), which `__main__` sets before importing it.
"""
