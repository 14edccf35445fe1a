"""Configuration of an S3 endpoint (destination or restore source).

In the YAML configuration::

    destinations:
      archive:
        type: s3
        bucket: research-archive
        prefix: ct/                        # optional; "" or ends with "/"
        endpoint_url: https://s3.example.org   # S3-compatible stores; omit for AWS
        region: eu-west-1
        access_key_id: ${ARCHIVE_KEY_ID}   # optional: else the boto3 chain
        secret_access_key_file: /etc/copydicom/archive.secret
        sse: aws:kms                       # optional: AES256 | aws:kms
        sse_kms_key_id: alias/research
        allow_overwrite: false
        key_template: "{prefix}{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
        multipart_threshold_mb: 16

On the command line the same endpoint is a URL (credentials never go in URLs)::

    s3://research-archive/ct/?endpoint_url=http://127.0.0.1:8333&region=us-east-1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field

from copydicom.errors import ConfigError
from copydicom.registry import EndpointConfig
from copydicom.secrets import expand_env, resolve_secret
from copydicom.sinks.s3._keys import DEFAULT_KEY_TEMPLATE, check_key_template

_MIB = 1024 * 1024
_SSE_VALUES = ("AES256", "aws:kms", "aws:kms:dsse")

_KNOWN_KEYS = frozenset(
    {
        "type", "bucket", "prefix", "endpoint_url", "region", "profile",
        "access_key_id", "secret_access_key", "secret_access_key_file",
        "session_token", "session_token_file", "sse", "sse_kms_key_id", "allow_overwrite",
        "key_template", "multipart_threshold_mb", "multipart_chunk_mb", "max_concurrency",
        "max_attempts", "conditional_put", "head_before_put", "storage_class", "verify_tls", "connect_timeout",
        "read_timeout", "sign_payload",
    }
)
#: Keys allowed in the query string of an ``s3://`` URL (no secrets).
_URL_KEYS = _KNOWN_KEYS - {
    "type", "bucket", "prefix", "access_key_id", "secret_access_key", "secret_access_key_file",
    "session_token", "session_token_file",
}


class S3Config(EndpointConfig):
    """Where and how to write (or read) DICOM objects in an S3 bucket.

    Attributes
    ----------
    name
        The endpoint's name in logs and the ledger.
    bucket
        Bucket name (must exist; copydicom never creates buckets).
    prefix
        Key prefix, ``""`` or ending with ``/``.
    endpoint_url
        Endpoint of an S3-compatible store (path-style addressing is used then).
    region
        Region to sign requests for.
    profile
        A named profile of the AWS shared configuration.
    access_key_id, secret_access_key, session_token
        Explicit credentials; when ``None`` the boto3 chain is used
        (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
    sse, sse_kms_key_id
        Server-side encryption (``AES256`` or ``aws:kms`` with an optional key).
    allow_overwrite
        Replace existing objects (off: an existing key is ``"existing"``).
    key_template
        Object-key template; see :mod:`copydicom.sinks.s3._keys`.
    multipart_threshold, multipart_chunksize
        Instances of at least ``multipart_threshold`` bytes are sent as multipart
        uploads in parts of ``multipart_chunksize`` bytes.
    max_concurrency
        Parallel part uploads, and parallel ``HEAD`` requests in dedupe look-ups.
    max_attempts
        botocore "standard" retry mode attempts per request.
    conditional_put
        Send ``If-None-Match: *`` so the server refuses to replace an object
        that appeared after our ``HEAD`` (ignored when ``allow_overwrite``).
    head_before_put
        ``HEAD`` each key before uploading (default): an existing object costs one
        small request instead of an upload.  A key that the dedupe look-up
        (``has_identities``) found absent moments before is not asked twice when
        ``conditional_put`` is on.  Turning it off (with ``conditional_put`` on)
        also drops the ``HEAD`` for keys stored without a look-up.
    sign_payload
        Off (default): an upload's body is covered by its ``x-amz-checksum-sha256``
        header, which is signed and which the server verifies (``BadDigest``), and not
        hashed a second time for the signature (``UNSIGNED-PAYLOAD``; botocore does
        the same over HTTPS whenever a checksum header is sent).  On: the signature
        also covers the body's SHA-256 over plain HTTP, for an S3-compatible server
        that ignores ``x-amz-checksum-*`` headers.  Only ``PutObject`` and
        ``UploadPart`` (which always carry the checksum) are concerned.
    """

    secret_keys: ClassVar[tuple[str, ...]] = ("secret_access_key", "session_token")

    type: str = "s3"
    name: str
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = Field(default=None, repr=False)
    session_token: str | None = Field(default=None, repr=False)
    sse: str | None = None
    sse_kms_key_id: str | None = None
    allow_overwrite: bool = False
    key_template: str = DEFAULT_KEY_TEMPLATE
    multipart_threshold: int = 16 * _MIB
    multipart_chunksize: int = 8 * _MIB
    max_concurrency: int = Field(default=8, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    conditional_put: bool = True
    head_before_put: bool = True
    storage_class: str | None = None
    verify_tls: bool = True
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    sign_payload: bool = False

    def __repr__(self) -> str:  # never show secrets
        return f"S3Config(name={self.name!r}, bucket={self.bucket!r}, prefix={self.prefix!r}, " \
               f"endpoint_url={self.endpoint_url!r}, region={self.region!r})"

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """The YAML keys: part sizes are written in MiB (``multipart_threshold_mb``, ``multipart_chunk_mb``)."""
        schema = super().config_schema()
        props = schema["properties"]
        props.pop("multipart_threshold", None)
        props.pop("multipart_chunksize", None)
        props["multipart_threshold_mb"] = {"type": "number", "minimum": 5, "default": 16}
        props["multipart_chunk_mb"] = {"type": "number", "minimum": 5, "default": 8}
        return schema

    @property
    def location(self) -> str:
        """``s3://bucket/prefix`` for messages."""
        return f"s3://{self.bucket}/{self.prefix}"

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], *, where: str) -> S3Config:
        """Build from a YAML mapping; raise :class:`ConfigError` naming the bad key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = sorted(set(data) - _KNOWN_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} for an s3 endpoint")
        if data.get("type", "s3") != "s3":
            raise ConfigError(f"{where}.type: expected 's3'")
        bucket = _text(data, "bucket", where, required=True)
        assert bucket is not None
        _check_bucket(bucket, f"{where}.bucket")
        access_key_id = _text(data, "access_key_id", where)
        secret = resolve_secret(data, "secret_access_key", where=where)
        token = resolve_secret(data, "session_token", where=where)
        if (access_key_id is None) != (secret is None):
            raise ConfigError(f"{where}: give both access_key_id and secret_access_key, or neither")
        sse = _text(data, "sse", where)
        if sse is not None and sse not in _SSE_VALUES:
            raise ConfigError(f"{where}.sse: expected one of {', '.join(_SSE_VALUES)}")
        kms_key = _text(data, "sse_kms_key_id", where)
        if kms_key is not None and not (sse or "").startswith("aws:kms"):
            raise ConfigError(f"{where}.sse_kms_key_id: only with sse: aws:kms")
        if not _flag(data, "head_before_put", where, True) and not _flag(data, "conditional_put", where, True):
            raise ConfigError(f"{where}.head_before_put: can be false only with conditional_put: true")
        template = _text(data, "key_template", where) or DEFAULT_KEY_TEMPLATE
        check_key_template(template, where=f"{where}.key_template")
        threshold = _number(data, "multipart_threshold_mb", where, 16, minimum=5)
        chunk = _number(data, "multipart_chunk_mb", where, 8, minimum=5)
        endpoint = _text(data, "endpoint_url", where)
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"{where}.endpoint_url: expected an http:// or https:// URL")
        if endpoint is not None and "@" in urlsplit(endpoint).netloc:
            raise ConfigError(f"{where}.endpoint_url: credentials do not belong in the URL")
        return cls(
            name=name,
            bucket=bucket,
            prefix=_prefix(_text(data, "prefix", where) or "", f"{where}.prefix"),
            endpoint_url=endpoint,
            region=_text(data, "region", where),
            profile=_text(data, "profile", where),
            access_key_id=access_key_id,
            secret_access_key=secret,
            session_token=token,
            sse=sse,
            sse_kms_key_id=kms_key,
            allow_overwrite=_flag(data, "allow_overwrite", where, False),
            key_template=template,
            multipart_threshold=int(threshold * _MIB),
            multipart_chunksize=int(chunk * _MIB),
            max_concurrency=int(_number(data, "max_concurrency", where, 8, minimum=1)),
            max_attempts=int(_number(data, "max_attempts", where, 5, minimum=1)),
            conditional_put=_flag(data, "conditional_put", where, True),
            head_before_put=_flag(data, "head_before_put", where, True),
            storage_class=_text(data, "storage_class", where),
            verify_tls=_flag(data, "verify_tls", where, True),
            connect_timeout=_number(data, "connect_timeout", where, 10.0, minimum=0.1),
            read_timeout=_number(data, "read_timeout", where, 60.0, minimum=0.1),
            sign_payload=_flag(data, "sign_payload", where, False),
        )

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None, where: str = "--dest") -> S3Config:
        """Build from ``s3://bucket/prefix/?endpoint_url=...&region=...``.

        Query parameters are the mapping keys except credentials, which come
        from the boto3 chain (``AWS_ACCESS_KEY_ID``...) on the command line.
        """
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ConfigError(f"{where}: expected an s3://bucket/prefix URL")
        if "@" in parts.netloc:
            raise ConfigError(
                f"{where}: credentials do not belong in the URL; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or use a named endpoint in the configuration"
            )
        data: dict[str, Any] = {"bucket": parts.netloc, "prefix": parts.path.lstrip("/")}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _URL_KEYS:
                raise ConfigError(f"{where}: unknown or forbidden URL parameter {key!r}")
            data[key] = value
        if not data["bucket"]:
            raise ConfigError(f"{where}: the URL names no bucket")
        if data["prefix"] and not data["prefix"].endswith("/"):
            data["prefix"] += "/"
        return cls.from_mapping(name or f"s3:{parts.netloc}", data, where=where)


def _text(data: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise ConfigError(f"{where}.{key}: required")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: expected text")
    return expand_env(value, where=f"{where}.{key}")


def _flag(data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = data.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.lower() in ("true", "yes", "1", "on")
    raise ConfigError(f"{where}.{key}: expected true or false")


def _number(data: Mapping[str, Any], key: str, where: str, default: float, *, minimum: float) -> float:
    value = data.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}: expected a number") from None
    if isinstance(value, bool) or number < minimum:
        raise ConfigError(f"{where}.{key}: expected a number >= {minimum:g}")
    return number


def _check_bucket(bucket: str, where: str) -> None:
    """Bucket names: 3-63 lower-case letters, digits, dots and hyphens (AWS S3 naming rules)."""
    ok = 3 <= len(bucket) <= 63 and bucket[0].isalnum() and bucket[-1].isalnum()
    ok = ok and all(c.islower() or c.isdigit() or c in ".-" for c in bucket) and bucket.isascii()
    if not ok:
        raise ConfigError(f"{where}: {bucket!r} is not a valid bucket name")


def _prefix(prefix: str, where: str) -> str:
    if prefix.startswith("/"):
        raise ConfigError(f"{where}: must not start with '/'")
    if prefix and not prefix.endswith("/"):
        raise ConfigError(f"{where}: must end with '/' (got {prefix!r})")
    if "//" in prefix:
        raise ConfigError(f"{where}: must not contain '//'")
    return prefix
