"""Keep credentials out of what a run writes: config.yaml, run.json, stats, logs.

Users pass fsspec `storage_options` (`key`, `secret`, `token`, ...) through the config;
the resolved config is saved beside the dataset, which is shipped to others. Every value
under a credential-like key is replaced by REDACTED before anything is written or hashed.
Prefer the environment and the provider's credential chain (AWS_* variables, instance
roles, ~/.aws): then nothing secret is in the config at all.
"""
from __future__ import annotations

from typing import Any

REDACTED = "<redacted>"
# fsspec backends' credential options (s3fs, gcsfs, adlfs, http auth) and the usual spellings
SECRET_KEYS = frozenset({
    "key", "secret", "token", "password", "passwd", "session_token", "access_key", "secret_key",
    "access_key_id", "secret_access_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "api_key", "account_key", "sas_token", "client_secret", "credential", "credentials", "connection_string",
    "auth", "authorization",
})
SECRET_SUFFIXES = ("_secret", "_token", "_password", "_api_key", "_account_key")


def is_secret_key(name: str) -> bool:
    n = str(name).lower()
    return n in SECRET_KEYS or n.endswith(SECRET_SUFFIXES)


def redact(data: Any) -> Any:
    """A copy of `data` (dicts, lists, scalars) with every credential value replaced."""
    if isinstance(data, dict):
        return {k: (REDACTED if is_secret_key(k) and v not in (None, "", {}) else redact(v)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact(v) for v in data]
    return data
