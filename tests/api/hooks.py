"""schemathesis hooks: the cross-field rules of participant-files that a JSON schema cannot state.

Each rule is also written in the document's descriptions; the refusals they avoid (400 for a body
that does not match its declared checksum or size) are tested in the Rust suite. Only requests
that schemathesis generated as valid are adjusted: invalid ones go out as generated.
"""

import base64
import hashlib
import itertools
import json
import os

import requests

import schemathesis
from schemathesis.generation.meta import TestPhase
from schemathesis.transport.serialization import serialize_binary


def _operation_id(case):
    return case.operation.definition.raw.get("operationId")


def _positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _body_bytes(case):
    # The bytes schemathesis sends for an application/octet-stream body.
    return serialize_binary(case.body) if case.body is not None else b""


_FRESH = itertools.count()


@schemathesis.serializer("application/offset+octet-stream")
def _offset_stream(ctx, value):
    # A tus PATCH body is plain bytes, as application/octet-stream.
    return serialize_binary(value)


def _header(case, name):
    for key in list(case.headers or {}):
        if key.lower() == name.lower():
            return key
    return None


def _service(method, path, **kwargs):
    """A request to the service under test as the all-roles caller, outside schemathesis."""
    base = os.environ["PF_SCHEMATHESIS_BASE"]
    headers = {"Authorization": f"Bearer {os.environ['PF_SCHEMATHESIS_TOKEN']}"}
    headers.update(kwargs.pop("headers", {}))
    return requests.request(method, base + path, headers=headers, allow_redirects=False, timeout=30, **kwargs)


def _real_upload_token(mime_type):
    """The token of a fresh upload URL, from a real POST."""
    res = _service("POST", f"/v3/participants/U/files/capability-{next(_FRESH)}", json={"mimeType": mime_type})
    assert res.status_code == 201, res.text
    return res.json()["uploadUrl"].rsplit("/", 1)[-1]


def _real_download_token():
    """The token of a download URL of a fresh 4 KiB file, from a real PUT and GET."""
    path = f"/v3/participants/U/files/capability-{next(_FRESH)}"
    body = bytes(range(256)) * 16
    res = _service("PUT", path, data=body, headers={"Content-Type": "application/octet-stream"})
    assert res.status_code == 201, res.text
    res = _service("GET", path)
    assert res.status_code == 302, res.text
    return res.headers["Location"].rsplit("/", 1)[-1]


@schemathesis.hook
def before_call(context, case, kwargs):
    if not _positive(case):
        return
    op = _operation_id(case)
    stateful = case.meta.phase.name == TestPhase.STATEFUL
    if op in ("uploadWithUrl", "downloadWithUrl") and not stateful and "PF_SCHEMATHESIS_BASE" in os.environ:
        # A generated token is refused (403) before anything else is looked at: a valid request
        # holds a real one. The stateful phase gets them through the document's links; the other
        # phases get one from a real POST (upload) or PUT and GET (download) here, so that the
        # Content-Type, the body and the Range are fuzzed against a URL that works.
        if op == "uploadWithUrl":
            case.path_parameters["token"] = _real_upload_token(case.media_type or "application/octet-stream")
        else:
            case.path_parameters["token"] = _real_download_token()
    if op in ("uploadSelfFile", "uploadParticipantFile") and case.headers:
        # `x-amz-checksum-sha256` is the SHA-256 of the body: a valid request sends the body's.
        for name in list(case.headers):
            if name.lower() == "x-amz-checksum-sha256":
                data = _body_bytes(case)
                case.headers[name] = base64.b64encode(hashlib.sha256(data).digest()).decode()
            if name.lower() == "content-disposition":
                # RFC 6266's grammar, percent-encoded UTF-8 inside, is more than a schema says.
                case.headers[name] = "attachment; filename*=UTF-8''R%C3%B6ntgen%20%22Befund%22.pdf"
    if op in ("tusCreateSelf", "tusCreate"):
        # A tus creation names its file in base64 metadata and sends its length or defers it,
        # not both: rules of the headers' contents that a schema cannot state.
        case.headers = case.headers or {}
        name = f"tus-{next(_FRESH)}.bin"
        case.headers[_header(case, "Upload-Metadata") or "Upload-Metadata"] = (
            "fileId " + base64.b64encode(name.encode()).decode()
        )
        length = _header(case, "Upload-Length")
        defer = _header(case, "Upload-Defer-Length")
        if length and defer:
            del case.headers[defer]
        if length:
            case.headers[length] = str(min(int(case.headers[length]), 1024))
        elif not defer:
            case.headers["Upload-Length"] = "16"
    if op in ("tusPatchSelf", "tusPatch") and case.headers:
        # Upload-Checksum is the checksum of the body: a valid request sends the body's.
        checksum = _header(case, "Upload-Checksum")
        if checksum:
            digest = hashlib.sha256(_body_bytes(case)).digest()
            case.headers[checksum] = "sha256 " + base64.b64encode(digest).decode()
    if op == "listAppFiles" and case.query and case.query.get("offsetKey"):
        # offsetKey is opaque: only a key the service gave out is valid, and no pattern can say
        # which those are. A valid request sends one, made as the service makes them (base64url
        # of {"t": millis, "u": userId, "f": fileId}; a position that need not be a file).
        raw = json.dumps({"t": 1795730400000, "u": "U", "f": "notes.txt"}, separators=(",", ":"))
        case.query["offsetKey"] = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    if (
        op in ("requestSelfUpload", "requestParticipantUpload")
        and stateful
        and isinstance(case.body, dict)
    ):
        # The stateful phase sends generated bytes to the upload URL, and no generated body
        # matches a generated size and SHA-256; declaring neither keeps the chain valid.
        case.body.pop("size", None)
        case.body.pop("sha256", None)


# What each operation answered, by phase, for scripts/api-check to prove that the capability
# routes were reached with real tokens (a 201 upload and a 200/206 download in the stateful
# phase), not only refused with made-up ones.
_SEEN = {}


@schemathesis.hook
def after_call(context, case, response):
    path = os.environ.get("PF_SCHEMATHESIS_STATS")
    if not path:
        return
    phase = case.meta.phase.name.value if case.meta is not None else "explicit"
    key = f"{phase} {_operation_id(case)}"
    statuses = _SEEN.setdefault(key, {})
    statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
    with open(path, "w") as f:
        json.dump(_SEEN, f, indent=1, sort_keys=True)
