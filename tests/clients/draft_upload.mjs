// tus-js-client in one of its IETF draft modes ('ietf-draft-03': interop version 5,
// 'ietf-draft-05': 6) uploading one file for tests/draft_clients.rs; prints one JSON line per
// event: {"url"}, {"sent"}, then {"done"} or {"error"}. It retries (HEAD, then resume) when the
// service goes away.
//
// usage: node draft_upload.mjs <endpoint> <file> <token> <chunk MiB> <fileId> <protocol>
import fs from 'node:fs'
import tus from 'tus-js-client' // CommonJS package without "exports": the default import

const [endpoint, path, token, chunkMiB, fileId, protocol] = process.argv.slice(2)
const say = (event) => console.log(JSON.stringify(event))
const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  protocol,
  uploadSize: fs.statSync(path).size,
  chunkSize: Number(chunkMiB) * 1024 * 1024,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: fileId, filetype: 'application/octet-stream' },
  retryDelays: [200, 500, 1000, 1000, 2000, 2000, 3000, 3000, 5000, 5000],
  onUploadUrlAvailable() { say({ url: upload.url }) },
  onChunkComplete(_, accepted) { say({ sent: accepted }) },
  onError(e) { say({ error: String(e) }); process.exit(1) },
  onSuccess() { say({ done: upload.url }); process.exit(0) },
})
upload.start()
