"""The README's curl walk-through, done by a Python client generated from /openapi.json.

Usage: walkthrough.py BASE_URL PARTICIPANT_TOKEN WORKER_TOKEN
(scripts/api-check generates the client with openapi-python-client into a package named
`participant_files_client` on PYTHONPATH, starts the service and makes the tokens.)

Every call goes through a generated function, with `raise_on_unexpected_status`, so a status the
document does not list fails here; every answer is checked.
"""

import base64
import hashlib
import sys

from participant_files_client import AuthenticatedClient, Client
from participant_files_client.api.capability import download_with_url, upload_with_url
from participant_files_client.api.participants import (
    erase_participant_files,
    list_participant_files,
)
from participant_files_client.api.self_ import (
    delete_self_file,
    erase_self_files,
    get_self_file,
    list_self_files,
    request_self_upload,
    upload_self_file,
)
from participant_files_client.models import BridgeError, ParticipantFile, UploadRequest
from participant_files_client.types import File

STEPS = 0


def check(condition, what):
    global STEPS
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    STEPS += 1
    print(f"ok: {what}")


def sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def main():
    base, token, worker_token = sys.argv[1:4]
    check(base.startswith("http://127.0.0.1:"), f"the service is on loopback ({base})")
    alice = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)
    worker = AuthenticatedClient(
        base_url=base, token=worker_token, raise_on_unexpected_status=True
    )
    # Capability URLs carry their own credential: no token goes with them.
    anyone = Client(base_url=base, raise_on_unexpected_status=True)

    # Ask for an upload URL for a new file...
    res = request_self_upload.sync_detailed(
        "notes.txt", client=alice, body=UploadRequest(mime_type="text/plain")
    )
    check(res.status_code == 201, f"POST upload URL: 201 (got {res.status_code})")
    pending = res.parsed
    check(isinstance(pending, ParticipantFile), "POST answers a ParticipantFile")
    check(pending.file_id == "notes.txt" and pending.mime_type == "text/plain", "it is notes.txt")
    check(isinstance(pending.upload_url, str) and "/v3/uploads/" in pending.upload_url, "with an uploadUrl")
    check(isinstance(pending.expires_on, str), "and expiresOn")

    # ...and upload the bytes to it. openapi-python-client sends every binary body as
    # application/octet-stream; an upload URL takes only the declared type (as a presigned S3 URL
    # does), so the request the generated function builds gets the declared Content-Type.
    body = b"Hello from alice"
    kwargs = upload_with_url._get_kwargs(
        last_segment(pending.upload_url), body=File(payload=body)
    )
    kwargs["headers"]["Content-Type"] = pending.mime_type
    res = upload_with_url._build_response(
        client=anyone, response=anyone.get_httpx_client().request(**kwargs)
    )
    check(res.status_code == 201, f"PUT to the upload URL: 201 (got {res.status_code}: {res.content!r})")
    stored = res.parsed
    check(stored.size == len(body) and stored.sha256 == sha256(body), "size and sha256 of the bytes")
    check(stored.scan_status == "unscanned", "scanStatus unscanned (no scanner)")

    # The generated function as it is (application/octet-stream) is refused with 403: the URL
    # was used, and the type is not the signed one. The document lists 403, so no exception.
    res = upload_with_url.sync_detailed(last_segment(pending.upload_url), client=anyone, body=File(payload=body))
    check(res.status_code == 403 and isinstance(res.parsed, BridgeError), "a used upload URL: 403")
    check(res.parsed.type_ == "UnauthorizedException", "in Bridge's error shape")

    # List alice's files.
    res = list_self_files.sync_detailed(client=alice)
    check(res.status_code == 200, "GET list: 200")
    page = res.parsed
    check([f.file_id for f in page.items] == ["notes.txt"], "the list holds notes.txt")
    check(page.has_next is False and page.request_params.page_size == 50, "one page, pageSize 50")
    check(page.type_ == "ForwardCursorPagedResourceList", "Bridge's page type")
    res = list_self_files.sync_detailed(client=alice, page_size=4)
    check(res.status_code == 400 and res.parsed.message == "pageSize must be from 5-100 records", "pageSize 4: 400")

    # Download: the GET answers 302 to a short-lived download URL.
    res = get_self_file.sync_detailed("notes.txt", client=alice)
    check(res.status_code == 302, f"GET file: 302 (got {res.status_code})")
    location = res.headers["location"]
    check(location == res.parsed.download_url, "Location is the body's downloadUrl")
    res = download_with_url.sync_detailed(last_segment(location), client=anyone)
    check(res.status_code == 200 and res.content == body, "the download URL serves the bytes")
    check(res.headers["content-type"] == "text/plain", "with the declared type")
    res = download_with_url.sync_detailed(last_segment(location), client=anyone, range_="bytes=0-4")
    check(res.status_code == 206 and res.content == b"Hello", "a range: 206")

    # Upload straight through the service in one request (replace).
    again = b"Hello again"
    res = upload_self_file.sync_detailed(
        "notes.txt", client=alice, body=File(payload=again), x_amz_checksum_sha256=sha256(again)
    )
    check(res.status_code == 201, f"PUT through the service: 201 (got {res.status_code}: {res.content!r})")
    check(res.parsed.size == len(again) and res.parsed.sha256 == sha256(again), "the new bytes")
    res = download_with_url.sync_detailed(last_segment(location), client=anyone)
    check(res.status_code == 404, "the old download URL: 404 after the replace")
    res = upload_self_file.sync_detailed(
        "notes.txt", client=alice, body=File(payload=again), x_amz_checksum_sha256=sha256(body)
    )
    check(res.status_code == 400 and res.parsed.type_ == "BadRequestException", "a wrong checksum: 400")

    # Delete it.
    res = delete_self_file.sync_detailed("notes.txt", client=alice)
    check(res.status_code == 200 and res.parsed.message == "Participant file deleted.", "DELETE: 200")
    check(res.parsed.type_ == "StatusMessage", "a StatusMessage")
    res = get_self_file.sync_detailed("notes.txt", client=alice)
    check(res.status_code == 404 and res.parsed.type_ == "EntityNotFoundException", "then GET: 404")
    res = delete_self_file.sync_detailed("notes.txt", client=alice)
    check(res.status_code == 404, "and DELETE again: 404")

    # The participant cannot erase; a worker erases by userId.
    res = erase_self_files.sync_detailed(client=alice)
    check(res.status_code == 403, "DELETE /v3/participants/self/files: 403")
    upload_self_file.sync_detailed("a.txt", client=alice, body=File(payload=b"a"))
    res = list_participant_files.sync_detailed("alice", client=worker)
    check([f.file_id for f in res.parsed.items] == ["a.txt"], "a worker lists alice's files by userId")
    res = erase_participant_files.sync_detailed("alice", client=worker)
    check(res.status_code == 200 and res.parsed.count == 1, "and erases them: count 1")

    # No token: 401, in Bridge's shape.
    res = list_self_files.sync_detailed(client=Client(base_url=base, raise_on_unexpected_status=True))
    check(res.status_code == 401 and res.parsed.type_ == "NotAuthenticatedException", "no token: 401")

    print(f"walk-through: {STEPS} passed, 0 failed")


if __name__ == "__main__":
    main()
