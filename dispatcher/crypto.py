"""Key material: the master key that encrypts signing secrets at rest and derives the tracking-token and
bounce-token keys.

The master key comes from DISPATCHER_SECRET_KEY, or is generated once into DATA_DIR/secret.key.
Every process that shares a database must share this key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dispatcher.settings import Settings

SECRET_PREFIX = "whsec_"  # an HMAC secret (Standard Webhooks v1)
PRIVATE_KEY_PREFIX = "whsk_"  # an ed25519 private key's 32-byte seed (v1a): stored encrypted, never shown
PUBLIC_KEY_PREFIX = "whpk_"  # its public key, published for receivers


@dataclass(frozen=True)
class Keyring:
    fernet: Fernet
    tracking_key: bytes
    bounce_key: bytes = b""  # signs the VERP tokens of envelope senders (dispatcher/sending/verp.py)

    def encrypt(self, value: str) -> bytes:
        return self.fernet.encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self.fernet.decrypt(bytes(token)).decode()
        except InvalidToken:
            raise RuntimeError(
                "cannot decrypt a signing secret: DISPATCHER_SECRET_KEY differs from the one used"
            ) from None


def _master_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.data_dir) / "secret.key"
    if not path.exists():
        _create_key_file(path)
    return path.read_bytes().strip()


def _create_key_file(path: Path) -> None:
    """Write a new key aside, durably, and link it into place: processes starting at the same moment
    see no key file or a whole one, never a half-written one, and the first link is everyone's key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            return  # another process's key is in place first
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the name, too, survives a crash: losing the key loses every secret
        finally:
            os.close(directory)
    finally:
        aside.unlink(missing_ok=True)


def load_keyring(settings: Settings) -> Keyring:
    master = _master_key(settings)
    fernet = Fernet(master)
    raw = base64.urlsafe_b64decode(master)
    tracking = hmac.new(raw, b"dispatcher tracking tokens", hashlib.sha256).digest()
    bounce = hmac.new(raw, b"dispatcher bounce tokens", hashlib.sha256).digest()
    return Keyring(fernet, tracking, bounce)


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_signing_key() -> str:
    """A v1a (ed25519) key pair, as the private key's seed: stored like an HMAC secret, never shown."""
    return PRIVATE_KEY_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def ed25519_key(secret: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret.removeprefix(PRIVATE_KEY_PREFIX)))


def public_key(secret: str) -> str | None:
    """The `whpk_…` public key of a v1a signing key; None for an HMAC secret (it has none)."""
    if not secret.startswith(PRIVATE_KEY_PREFIX):
        return None
    raw = ed25519_key(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()
