// One upload of a file on disk to participant-files, as a new user would send it, for the
// `intake` case of benches/stream: with tus-js-client in chunks (one PATCH each), or as one
// streaming PUT, or through the IETF draft (interop version 8) with no library: a creation
// without bytes, then appends of <chunk MiB> each (0: the whole file in one append). All read
// the file with fs.createReadStream (64 KiB reads), so the client's part of the cost is the
// same and the difference is the service's. Prints {"seconds": <wall>, "bytes": <size>} on one
// line; exits non-zero on any error, never retries.
//
// usage: node intake.mjs tus <service URL> <file> <token> <chunk MiB> <file name>
//        node intake.mjs put <service URL> <file> <token> 0 <file name>
//        node intake.mjs draft <service URL> <file> <token> <chunk MiB, 0: one append> <file name>
import fs from 'node:fs'
import http from 'node:http'
import tus from 'tus-js-client' // CommonJS package without "exports": use the default import

const [mode, base, path, token, chunkArg, name] = process.argv.slice(2)
if (!['tus', 'put', 'draft'].includes(mode) || !base || !path || !token || !name) {
  console.error('usage: node intake.mjs tus|put|draft <service URL> <file> <token> <chunk MiB> <name>')
  process.exit(2)
}
const size = fs.statSync(path).size

function viaTus() {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(fs.createReadStream(path), {
      endpoint: `${base}/v3/participants/self/uploads`,
      uploadSize: size,
      chunkSize: Number(chunkArg) * 1024 * 1024,
      headers: { Authorization: `Bearer ${token}` },
      metadata: { filename: name, filetype: 'application/octet-stream' },
      retryDelays: null, // a failure must fail the bench, not be retried quietly
      onError: reject,
      onSuccess: resolve,
    })
    upload.start()
  })
}

function viaPut() {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}/v3/participants/self/files/${encodeURIComponent(name)}`,
      {
        method: 'PUT',
        headers: {
          Authorization: `Bearer ${token}`,
          'Content-Type': 'application/octet-stream',
          'Content-Length': size,
        },
      },
      (res) => {
        let text = ''
        res.on('data', (d) => { text += d })
        res.on('end', () =>
          res.statusCode === 201 ? resolve() : reject(new Error(`PUT: ${res.statusCode} ${text}`)))
      },
    )
    req.on('error', reject)
    fs.createReadStream(path).on('error', reject).pipe(req)
  })
}

// One request; resolves with its status, headers and body text. `body`: a stream to pipe, or none.
function send(method, url, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      let text = ''
      res.on('data', (d) => { text += d })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }))
    })
    req.on('error', reject)
    if (body) body.on('error', reject).pipe(req)
    else req.end()
  })
}
const agent = new http.Agent({ keepAlive: true })

// The draft's careful creation (version 8): POST to the target resource with
// `Upload-Complete: ?0` and no bytes, then appends with `Upload-Offset`, the last one
// `Upload-Complete: ?1`, whose answer is the 201 ParticipantFile.
async function viaDraft() {
  const draft = { Authorization: `Bearer ${token}`, 'Upload-Draft-Interop-Version': '8' }
  const created = await send('POST', `${base}/v3/participants/self/files/${encodeURIComponent(name)}`, {
    ...draft,
    'Upload-Complete': '?0',
    'Upload-Length': size,
    'Content-Type': 'application/octet-stream',
    'Content-Length': 0,
  })
  if (created.status !== 201 || !created.headers.location) {
    throw new Error(`draft creation: ${created.status} ${created.text}`)
  }
  const url = new URL(created.headers.location, base)
  const chunk = Number(chunkArg) > 0 ? Number(chunkArg) * 1024 * 1024 : size
  for (let offset = 0; offset < size; offset += chunk) {
    const end = Math.min(offset + chunk, size)
    const last = end === size
    const res = await send('PATCH', url, {
      ...draft,
      'Upload-Offset': offset,
      'Upload-Complete': last ? '?1' : '?0',
      'Content-Type': 'application/partial-upload',
      'Content-Length': end - offset,
    }, fs.createReadStream(path, { start: offset, end: end - 1 }))
    if (res.status !== (last ? 201 : 204) || Number(res.headers['upload-offset']) !== end) {
      throw new Error(`draft append at ${offset}: ${res.status} ${res.text}`)
    }
  }
}

const t0 = process.hrtime.bigint()
try {
  await ({ tus: viaTus, put: viaPut, draft: viaDraft })[mode]()
} catch (err) {
  console.error(`intake.mjs: ${err?.message ?? err}`)
  process.exit(1)
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9
console.log(JSON.stringify({ seconds, bytes: size }))
process.exit(0) // Node's keep-alive sockets (its default since Node 19) need not close first
