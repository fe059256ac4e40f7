"""The annex on S3: the Large File Annex bucket, as ts_salobj's AsyncS3Bucket lays it out.

Key ``<CSC>/header/<yyyy>/<mm>/<dd>/<CSC>-header-<imageName>[.v<N>]<suffix>`` (date = DAYOBS, the
observing day TAI - 12 h); announced URL ``<S3_ENDPOINT_URL>/<bucket>/<key>``. Endpoint and
credentials come from ``S3_ENDPOINT_URL`` and the standard AWS variables or profile (boto3).

An upload is one PUT (whole or absent) carrying the file's MD5 (``Content-MD5``: S3 refuses bytes
that do not match it) and ``If-None-Match: *`` (it never replaces an object); the answer's ETag must
be the MD5 (single-part upload), else the object is read back and its MD5 compared. An object already at the
key with the same MD5 counts as stored (a publisher restarted after its upload); with other bytes it
raises :class:`AnnexConflict` (the publisher then stores the file under a key of its own). S3
unreachable, slow or failing raises :class:`AnnexUnavailable` (the header is kept and retried);
wrong credentials or a bucket that cannot be made raise :class:`S3SetupError` with what to fix.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from typing import Any

from procs.annex import AnnexConflict, AnnexUnavailable, dayobs_path, file_name, side_location

log = logging.getLogger("annex.s3")

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 4.0
AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken", "403"}


class S3SetupError(RuntimeError):
    """The annex cannot be used as configured (credentials, bucket): an operator must act."""


def s3_client(**overrides: Any) -> Any:
    """A boto3 S3 client for ``S3_ENDPOINT_URL`` (or AWS), short timeouts, a few retries."""
    import boto3
    from botocore.config import Config

    cfg = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"total_max_attempts": 1, "mode": "standard"},  # the publisher retries every cycle
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )
    endpoint = os.environ.get("S3_ENDPOINT_URL") or None
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=cfg, **overrides)


def error_code(exc: Exception) -> str:
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", "")) or str(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def header_key(csc: str, dayobs: object, image: object, version: int, fmt: str) -> str:
    """The LFA key of one header file; BadName for a DAYOBS or imageName that cannot be a key."""
    yyyy, mm, dd = dayobs_path(dayobs)
    return f"{csc}/header/{yyyy}/{mm}/{dd}/{csc}-header-{file_name(image, version, fmt)}"  # type: ignore[arg-type]


def md5_b64(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode()


class S3Annex:
    kind = "s3"

    def __init__(self, bucket: str, csc: str, client: Any = None):
        self.bucket = bucket
        self.csc = csc
        self.client = client or s3_client()
        self.endpoint = str(self.client.meta.endpoint_url).rstrip("/")

    # -- setup -------------------------------------------------------------------------------
    def check(self, create: bool = True) -> None:
        """Credentials and bucket usable? Creates a missing bucket; S3SetupError says what is wrong,
        AnnexUnavailable when S3 does not answer (retried by the caller)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except NoCredentialsError:
            raise S3SetupError("no S3 credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
        except ClientError as exc:
            code = error_code(exc)
            if code in AUTH_ERRORS:
                raise S3SetupError(f"S3 credentials refused for bucket {self.bucket} at {self.endpoint} ({code})") from None
            if code not in ("404", "NoSuchBucket"):
                raise AnnexUnavailable(f"S3 {self.endpoint}: bucket {self.bucket}: {code or exc}") from None
        except BotoCoreError as exc:
            raise AnnexUnavailable(f"S3 {self.endpoint} unreachable: {exc}") from None
        if not create:
            raise S3SetupError(f"bucket {self.bucket} does not exist at {self.endpoint}")
        try:
            self.client.create_bucket(Bucket=self.bucket)
            log.warning("bucket %s did not exist at %s: created", self.bucket, self.endpoint)
        except ClientError as exc:
            raise S3SetupError(f"bucket {self.bucket} does not exist at {self.endpoint} and cannot be created: {error_code(exc)}") from None
        except BotoCoreError as exc:
            raise AnnexUnavailable(f"S3 {self.endpoint} unreachable: {exc}") from None

    # -- the Annex interface -----------------------------------------------------------------
    def location(self, dayobs: object, image: object, version: int, fmt: str) -> str:
        return header_key(self.csc, dayobs, image, version, fmt)

    def url(self, loc: str) -> str:
        return f"{self.endpoint}/{self.bucket}/{loc}"

    def head_md5(self, key: str) -> str | None:
        """MD5 of the object at ``key`` (its single-part ETag), None if there is none."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise AnnexUnavailable(f"S3 HEAD {key}: {error_code(exc) or exc}") from None
        except BotoCoreError as exc:
            raise AnnexUnavailable(f"S3 {self.endpoint} unreachable: {exc}") from None
        return str(head.get("ETag", "")).strip('"')

    def stored_md5(self, key: str) -> str | None:
        """MD5 of the object's bytes, read back (an ETag is not the MD5 under SSE-KMS encryption)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return hashlib.md5(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()).hexdigest()
        except (BotoCoreError, ClientError) as exc:
            raise AnnexUnavailable(f"S3 GET {key} (verification): {exc}") from None

    def put(self, loc: str, data: bytes, md5: str, fmt: str, _again: bool = True) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        content_type = "application/fits" if fmt == "fits" else "application/yaml"
        try:
            resp = self.client.put_object(
                Bucket=self.bucket, Key=loc, Body=data, ContentMD5=md5_b64(md5), ContentType=content_type, IfNoneMatch="*"
            )
        except ClientError as exc:
            code = error_code(exc)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                there = self.head_md5(loc)
                if there != md5 and there is not None:
                    there = self.stored_md5(loc)  # the ETag may not be an MD5 (SSE-KMS): compare the bytes
                if there == md5:
                    return  # stored before (a publisher restarted after its upload): the same bytes
                raise AnnexConflict(f"s3://{self.bucket}/{loc}", there) from None
            if code == "NoSuchBucket" and _again:  # an S3 restarted empty, or the bucket removed
                self.check(create=True)
                return self.put(loc, data, md5, fmt, _again=False)
            if code in AUTH_ERRORS:
                raise AnnexUnavailable(f"S3 refused the upload of {loc} ({code}): check the credentials") from None
            raise AnnexUnavailable(f"S3 upload of {loc} failed: {code or exc}") from None
        except BotoCoreError as exc:
            raise AnnexUnavailable(f"S3 {self.endpoint} unreachable: {exc}") from None
        etag = str(resp.get("ETag", "")).strip('"')
        if etag != md5 and self.stored_md5(loc) != md5:
            try:  # bytes damaged on the way: removed, so that the retry finds the key free
                self.client.delete_object(Bucket=self.bucket, Key=loc)
            except (BotoCoreError, ClientError) as exc:
                log.warning("damaged upload %s not removed: %s", loc, exc)
            raise AnnexUnavailable(f"S3 upload of {loc}: stored MD5 {etag} is not {md5}")

    def commit(self, loc: str) -> None:
        """Nothing to do: S3 answered the PUT once the object was stored."""

    def put_side(self, loc: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=side_location(loc), Body=data, ContentType="application/json")
        except (BotoCoreError, ClientError) as exc:
            raise AnnexUnavailable(f"S3 upload of the side-car of {loc} failed: {exc}") from None

    def get(self, loc: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=loc)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey"):
                raise FileNotFoundError(loc) from None
            raise
