// One upload of a file on disk to participant-files, as a new user would send it, for the
// `intake` case of benches/stream: with tus-js-client in chunks (one PATCH each), or as one
// streaming PUT. Both read the file with fs.createReadStream (64 KiB reads), so the client's
// part of the cost is the same and the difference is the service's. Prints
// {"seconds": <wall>, "bytes": <size>} on one line; exits non-zero on any error, never retries.
//
// usage: node intake.mjs tus <service URL> <file> <token> <chunk MiB> <file name>
//        node intake.mjs put <service URL> <file> <token> 0 <file name>
import fs from 'node:fs'
import http from 'node:http'
import tus from 'tus-js-client' // CommonJS package without "exports": use the default import

const [mode, base, path, token, chunkArg, name] = process.argv.slice(2)
if (!['tus', 'put'].includes(mode) || !base || !path || !token || !name) {
  console.error('usage: node intake.mjs tus|put <service URL> <file> <token> <chunk MiB> <name>')
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

const t0 = process.hrtime.bigint()
try {
  await (mode === 'tus' ? viaTus() : viaPut())
} catch (err) {
  console.error(`intake.mjs: ${err?.message ?? err}`)
  process.exit(1)
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9
console.log(JSON.stringify({ seconds, bytes: size }))
process.exit(0) // Node's keep-alive sockets (its default since Node 19) need not close first
