"""Node identity: one Ed25519 key per node.

A node *is* its Ed25519 public key (the node id). The same key
authenticates the QUIC TLS handshake (the certificate key is pinned to the
node id in the ticket) and, later, the relay login and disco messages.

Invariants:
- The secret key is stored as its 32-byte seed in ``<home>/node.key`` with
  mode 0600, written atomically; it never appears in a message, a log line,
  ``repr()`` or a traceback.
- ``P2PCP_HOME`` overrides the folder, so tests can run two nodes on one
  machine; otherwise platformdirs' user data dir is used.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from p2pcp.core.config import home_override
from p2pcp.core.errors import ConfigError, StorageError, UsageError

NODE_ID_BYTES = 32
SEED_BYTES = 32
# 10 base32 characters are 50 bits: enough to tell nodes apart by eye.
SHORT_ID_CHARS = 10
KEY_FILE_NAME = "node.key"
_KEY_FILE_MAGIC = b"p2pcp-ed25519-seed-v1\n"


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    cleaned = text.strip().upper()
    padding = "=" * (-len(cleaned) % 8)
    try:
        return base64.b32decode(cleaned + padding)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"not a node id: {text[:60]!r}") from exc


class NodeId:
    """The public Ed25519 key of a node, 32 raw bytes."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != NODE_ID_BYTES:
            raise UsageError(f"a node id has {NODE_ID_BYTES} bytes, got {len(raw)}")
        self._raw = bytes(raw)

    @classmethod
    def from_str(cls, text: str) -> NodeId:
        return cls(_b32decode(text))

    def __bytes__(self) -> bytes:
        return self._raw

    def __str__(self) -> str:
        return _b32encode(self._raw)

    def __repr__(self) -> str:
        return f"NodeId({self.short()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeId) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def short(self) -> str:
        return str(self)[:SHORT_ID_CHARS]


class SecretKey:
    """An Ed25519 signing key. Its bytes never leave this object by accident."""

    __slots__ = ("_seed", "_signing_key")

    def __init__(self, seed: bytes) -> None:
        from nacl.signing import SigningKey

        if len(seed) != SEED_BYTES:
            raise UsageError("an Ed25519 seed has 32 bytes")
        self._seed = bytes(seed)
        self._signing_key = SigningKey(self._seed)

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(os.urandom(SEED_BYTES))

    @property
    def public(self) -> NodeId:
        return NodeId(bytes(self._signing_key.verify_key))

    def seed_bytes(self) -> bytes:
        return self._seed

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing_key.sign(message).signature)

    def __repr__(self) -> str:
        return f"SecretKey(public={self.public.short()})"


def verify_signature(node_id: NodeId, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is node_id's signature of ``message``."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    try:
        VerifyKey(bytes(node_id)).verify(message, signature)
    except (BadSignatureError, ValueError):
        return False
    return True


def default_home() -> Path:
    """The folder holding the node key: ``$P2PCP_HOME`` or the user data dir."""
    override = home_override()
    if override is not None:
        return override
    import platformdirs

    return Path(platformdirs.user_data_dir("p2pcp", appauthor=False))


def load_or_create_secret_key(home: Path | None = None) -> SecretKey:
    """Load the node key from ``home``, creating it (mode 0600) on first use."""
    home = default_home() if home is None else home
    path = home / KEY_FILE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _create_key(home, path)
    except OSError as exc:
        raise StorageError(f"cannot read the node key {path}: {exc.strerror}") from None
    if not data.startswith(_KEY_FILE_MAGIC) or len(data) != len(_KEY_FILE_MAGIC) + SEED_BYTES:
        raise ConfigError(f"the node key file {path} is damaged; move it away to make a new key")
    return SecretKey(data[len(_KEY_FILE_MAGIC) :])


def _create_key(home: Path, path: Path) -> SecretKey:
    key = SecretKey.generate()
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=".node.key.", dir=home)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, _KEY_FILE_MAGIC + key.seed_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if another process created the key meanwhile: use theirs.
            os.link(tmp_name, path)
        except FileExistsError:
            os.unlink(tmp_name)
            return load_or_create_secret_key(home)
        os.unlink(tmp_name)
    except OSError as exc:
        raise StorageError(f"cannot create the node key in {home}: {exc.strerror}") from None
    return key
