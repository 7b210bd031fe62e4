"""Signing what crosses a process boundary as a pickle.

Invocation payloads, graph specs, function code and outputs are pickles, and unpickling runs
code, so every such blob carries an HMAC-SHA256 tag (truncated to 128 bits) made with a
secret shared by the client and its workers. A worker refuses a blob whose tag is missing or
wrong before unpickling anything.

The secret comes from ``$SHOAL_SECRET``. When it is unset and every worker is the client's
own (the embedded engine, a private gateway), a fresh secret is made, once per client
process (its private gateway serves its later runs), and handed to the private gateway
through its environment.
"""

from __future__ import annotations

import functools
import hmac
import os
import secrets
from collections.abc import Sequence

from .errors import BadSignature, ConfigError

SECRET_ENV = "SHOAL_SECRET"
TAG_BYTES = 16


class Signer:
    """Signs blobs with a shared secret, and checks them."""

    __slots__ = ("_key",)

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 16:
            raise ConfigError(f"{SECRET_ENV} must be at least 16 bytes long, got {len(key)}")
        self._key = key

    @classmethod
    def from_env(cls) -> Signer:
        """The signer for ``$SHOAL_SECRET``; a clear error when it is unset."""
        secret = os.environ.get(SECRET_ENV)
        if not secret:
            raise ConfigError(
                f"{SECRET_ENV} is not set: workers in other processes need the secret that "
                "signs their payloads (any string of 16 or more characters, the same for "
                "the client and its workers)"
            )
        return cls(secret)

    @classmethod
    def new(cls) -> Signer:
        """A signer with a fresh random secret (for a private gateway)."""
        return cls(secrets.token_hex(32))

    @property
    def secret(self) -> str:
        """The secret as text, to hand to workers this client starts itself."""
        return self._key.decode()

    def tag(self, data: bytes | memoryview) -> bytes:
        return hmac.digest(self._key, data, "sha256")[:TAG_BYTES]

    def sign(self, data: bytes) -> bytes:
        """``data`` with its tag in front."""
        return self.tag(data) + data

    def tag_parts(self, parts: Sequence[bytes | memoryview]) -> bytes:
        """The tag of the concatenation of ``parts``, without making it."""
        mac = hmac.new(self._key, digestmod="sha256")
        for part in parts:
            mac.update(part)
        return mac.digest()[:TAG_BYTES]

    def verify(self, blob: bytes | bytearray | memoryview, what: str) -> memoryview:
        """The data of a signed ``blob``; :class:`BadSignature` naming ``what`` if the tag
        is missing or wrong."""
        view = memoryview(blob)
        if len(view) < TAG_BYTES or not hmac.compare_digest(
            self.tag(view[TAG_BYTES:]), view[:TAG_BYTES]
        ):
            raise BadSignature(
                f"refusing {what}: its signature does not match (unsigned, tampered with, or "
                f"signed with another {SECRET_ENV})"
            )
        return view[TAG_BYTES:]


def client_signer(private: bool) -> Signer | None:
    """A run's signer on the client: from ``$SHOAL_SECRET`` if set; else, when every worker
    is the client's own (``private``), a fresh one for the run, handed to them; else None
    (whatever needs it then asks for ``$SHOAL_SECRET`` by name)."""
    if os.environ.get(SECRET_ENV):
        return Signer.from_env()
    return _process_signer() if private else None


@functools.cache
def _process_signer() -> Signer:
    """One secret per client process for its own workers: its private gateway outlives a
    run, to serve the next (see :mod:`shoal.backends.gateway`)."""
    return Signer.new()
