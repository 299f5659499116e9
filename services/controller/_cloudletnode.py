"""CloudletNode: an edge machine allowed to fetch its configuration (crm_platforms.md §5.4, §6).

A platform that boots a VM on a site (the awsec2 platform VM, later the OpenStack, vSphere
and VM-pool nodes) registers it here first, through its `AccessApi`, and embeds the
one-time password it gets back in the VM's first-boot script. The confignode HTTP server
checks the node's basic-auth login against what is stored here, so only a hash is kept:
PBKDF2-HMAC-SHA256 with a random 8-byte salt and 10000 iterations, 32-byte key, both
base64 encoded, the original's `passhash` scheme, so a hash written by either side checks
on the other. The clear password leaves the Controller once, in the create's
`Result.message`, and never appears in a Show.

A node belongs to its cloudlet: creating one needs the cloudlet (not being deleted), and a
cloudlet's delete removes its nodes (`cleanup_nodes`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import string
from typing import Final

from edgeproto import cloudletkey_pb2, cloudletnode_pb2

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.objects import keys, registry
from services.controller._cloudletinfo import CLOUDLET
from services.controller._engine import Engine, Txn

__all__ = [
    "CLOUDLET_NODE",
    "PASSHASH_ITER",
    "UPDATABLE",
    "check_node",
    "cleanup_nodes",
    "create_node",
    "new_password",
    "password_hash",
    "password_matches",
    "redacted",
]

log = logging.getLogger(__name__)

CLOUDLET_NODE: Final = registry.by_class(cloudletnode_pb2.CloudletNode)
PASSHASH_ITER: Final = 10000
"""PBKDF2 iterations of a new hash (the original's `PasshashIter`)."""
_KEY_BYTES: Final = 32
_SALT_BYTES: Final = 8
_PASSWORD_LEN: Final = 48
_DIGITS: Final = 10
_SYMBOLS: Final = 10
_SYMBOL_SET: Final = "~!@#$%^&*()_+-={}|[]:<>?,./"
"""The original's generator symbols minus quotes, backslash and backtick: the password is
embedded in a shell script on the node, where those would need escaping."""
UPDATABLE: Final = frozenset({"3", "4", "8", "9"})
"""node_type, node_role, owner_tags, attributes: the password fields change only by
re-creating the node, which hands out a new password."""


def new_password() -> str:
    """A random 48-character password: 10 digits, 10 symbols, the rest letters.

    The composition is the original's (`password.Generate(48, 10, 10, false, false)`), from
    the OS's cryptographic generator.
    """
    rng = secrets.SystemRandom()
    chars = [rng.choice(string.digits) for _ in range(_DIGITS)]
    chars += [rng.choice(_SYMBOL_SET) for _ in range(_SYMBOLS)]
    chars += [rng.choice(string.ascii_letters) for _ in range(_PASSWORD_LEN - _DIGITS - _SYMBOLS)]
    rng.shuffle(chars)
    return "".join(chars)


def password_hash(password: str, salt: bytes, iterations: int = PASSHASH_ITER) -> str:
    """The base64 PBKDF2-HMAC-SHA256 hash of a password (the original's `Passhash`)."""
    derived = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations, _KEY_BYTES)
    return base64.b64encode(derived).decode()


def password_matches(password: str, node: cloudletnode_pb2.CloudletNode) -> bool:
    """Whether a login password is the node's (constant-time compare).

    Returns:
        False also when the node has no hash or a salt that is not base64.
    """
    if not node.password_hash or node.iter <= 0:
        return False
    try:
        salt = base64.b64decode(node.salt, validate=True)
    except ValueError:
        return False
    computed = password_hash(password, salt, node.iter)
    return hmac.compare_digest(computed.encode(), node.password_hash.encode())


def check_node(node: cloudletnode_pb2.CloudletNode) -> None:
    """Validate a request's key.

    Raises:
        InvalidArgument: An empty node name or an invalid cloudlet key, saying which.
    """
    try:
        keys.validate_key(node)
    except InvalidArgument as err:
        raise InvalidArgument(f"Invalid CloudletNode key: {err.message}") from None


def redacted(node: cloudletnode_pb2.CloudletNode) -> cloudletnode_pb2.CloudletNode:
    """A copy without the password hash, salt and iterations, for Show."""
    out = cloudletnode_pb2.CloudletNode()
    out.CopyFrom(node)
    out.ClearField("password_hash")
    out.ClearField("salt")
    out.ClearField("iter")
    return out


async def create_node(engine: Engine, request: cloudletnode_pb2.CloudletNode) -> str:
    """Store a node with the hash of a new password; returns the clear password.

    An existing node of the same key is replaced, as in the original: a platform retrying
    an onboarding registers the VM again and its earlier password stops working.

    Raises:
        InvalidArgument: The key is invalid.
        NotFound: The cloudlet does not exist.
        FailedPrecondition: The cloudlet is being deleted.
    """
    check_node(request)
    password = new_password()
    salt = secrets.token_bytes(_SALT_BYTES)
    node = cloudletnode_pb2.CloudletNode()
    node.CopyFrom(request)
    node.ClearField("fields")
    node.password_hash = password_hash(password, salt)
    node.salt = base64.b64encode(salt).decode()
    node.iter = PASSHASH_ITER

    def fn(txn: Txn) -> None:
        if txn.get(CLOUDLET_NODE, node.key) is not None:
            log.info("cloudlet node %s exists, replacing it", keys.key_string(node.key))
        txn.require(CLOUDLET, node.key.cloudlet_key)
        txn.put(node)

    await engine.apply(fn)
    log.info(
        "created cloudlet node %s of type %s",
        keys.key_string(node.key),
        node.node_type,
    )
    return password


async def cleanup_nodes(engine: Engine, cloudlet_key: cloudletkey_pb2.CloudletKey) -> int:
    """Remove every node of a deleted cloudlet (the original's `cleanupNodes`).

    Failures are logged, not raised: the cloudlet is gone already, and its leftover nodes
    can still be deleted one by one.

    Returns:
        How many nodes were removed.
    """
    found = [
        keys.key_string(node.key)
        for node in engine.show(cloudletnode_pb2.CloudletNode())
        if node.key.cloudlet_key == cloudlet_key
    ]
    if not found:
        return 0

    def fn(txn: Txn) -> None:
        for key in found:
            txn.delete(CLOUDLET_NODE, key)

    try:
        await engine.apply(fn)
    except EdgeError as err:
        log.warning("could not remove the nodes of cloudlet %s: %s", cloudlet_key, err)
        return 0
    return len(found)
