"""Key files of the CLI: `{"alg", "seed", "address"}` with a hex 32-byte seed (KeyPair.from_seed), mode 0600.

A public key file is `{"alg", "pk"}` (DOMAIN.md's key form); wherever a public key is asked for, a key file does
too. Like ssh, a private key file that others may read is refused.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

from schemas.limits import PK_BYTES
from schemas.signing import ALGS, KeyPair

KEY_FILE_MODE = 0o600
_SEED = re.compile(r"[0-9a-f]{64}")


class KeyFileError(Exception):
    """A key file that cannot be used; the message names the file and the problem."""


def write_key_file(path: Path, seed: bytes, alg: str, *, force: bool = False) -> KeyPair:
    """Write a key file readable by its owner only; an existing file is kept unless `force`."""
    if alg not in ALGS:
        raise KeyFileError(f"{path}: alg must be one of {', '.join(ALGS)}")
    if len(seed) != 32:
        raise KeyFileError(f"{path}: a key seed is 32 bytes")
    key = KeyPair.from_seed(seed, alg)
    text = json.dumps({"alg": alg, "seed": seed.hex(), "address": key.address}, indent=2) + "\n"
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), KEY_FILE_MODE)  # an overwritten file keeps its old mode otherwise
        f.write(text)
    return key


def new_key_file(path: Path, alg: str, *, force: bool = False) -> KeyPair:
    return write_key_file(path, secrets.token_bytes(32), alg, force=force)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a JSON key file ({exc})") from None
    if not isinstance(doc, dict):
        raise KeyFileError(f"{path}: not a JSON key file (expected an object)")
    return doc


def load_key_file(path: Path) -> KeyPair:
    """The signing key of a key file written by `tally keygen` or `tally devnet-key`."""
    mode = stat.S_IMODE(os.stat(path).st_mode) if Path(path).exists() else 0
    if mode & 0o077:
        raise KeyFileError(f"{path}: permissions {mode:04o} are too open for a private key; chmod 600 {path}")
    doc = _read_json(path)
    alg, seed = doc.get("alg"), doc.get("seed")
    if alg not in ALGS:
        raise KeyFileError(f"{path}: alg must be one of {', '.join(ALGS)}")
    if not isinstance(seed, str) or not _SEED.fullmatch(seed):
        raise KeyFileError(f"{path}: seed must be 64 lowercase hex characters (32 bytes)")
    key = KeyPair.from_seed(bytes.fromhex(seed), alg)
    if "address" in doc and doc["address"] != key.address:
        raise KeyFileError(f"{path}: address {doc['address']} is not the address of its seed ({key.address})")
    return key


def load_public_key(path: Path) -> dict[str, str]:
    """DOMAIN.md's `{"alg", "pk"}` from a public key file or a key file."""
    doc = _read_json(path)
    if "seed" in doc:
        return load_key_file(path).key
    alg, pk = doc.get("alg"), doc.get("pk")
    if alg not in PK_BYTES:
        raise KeyFileError(f"{path}: alg must be one of {', '.join(PK_BYTES)}")
    if not isinstance(pk, str) or len(pk) != 2 * PK_BYTES[alg] or not re.fullmatch(r"[0-9a-f]*", pk):
        raise KeyFileError(f"{path}: pk must be {PK_BYTES[alg]} bytes of lowercase hex for {alg}")
    return {"alg": alg, "pk": pk}
