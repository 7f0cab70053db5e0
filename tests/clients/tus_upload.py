"""tuspy uploading one file for tests/tus_clients.rs; prints one JSON line per event:
{"url"}, {"sent"}, then {"done"}. It retries each chunk (asking the offset again) when the
service goes away.

usage: python3 tus_upload.py <endpoint> <file> <token> <chunk MiB> <fileId>
"""
import json
import os
import sys

from tusclient import client

endpoint, path, token, chunk_mib, file_id = sys.argv[1:6]


def say(event):
    print(json.dumps(event), flush=True)


tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
uploader = tus.uploader(
    path,
    chunk_size=int(chunk_mib) * 1024 * 1024,
    metadata={"filename": file_id, "filetype": "application/octet-stream"},
    retries=60,
    retry_delay=0.5,
)
say({"url": uploader.url})
size = os.path.getsize(path)
while uploader.offset < size:
    uploader.upload_chunk()
    say({"sent": uploader.offset})
say({"done": uploader.url})
