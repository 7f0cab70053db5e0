// Peer server for benches/stream.rs: @tus/server + @tus/s3-store writing to an
// S3-compatible endpoint (s3s-fs in the bench). Run as `node server.mjs` directly
// (no npm wrapper) so the parent's child PID *is* this process and its
// /proc/<pid> VmHWM and CPU times are the server's own.
//
// Env: PORT, AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
//      AWS_REGION, BUCKET. Prints `listening` once the socket is bound.
import { Server } from '@tus/server'
import { S3Store } from '@tus/s3-store'

function need(name) {
  const v = process.env[name]
  if (!v) {
    console.error(`server.mjs: env ${name} is required`)
    process.exit(2)
  }
  return v
}

const port = Number(need('PORT'))

// The AWS SDK warns on stderr that its releases after Jan 2027 need Node 22;
// package-lock.json pins a release that runs on Node 20, so the note is noise.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true'

const datastore = new S3Store({
  // 8 MiB parts, the same part size as our service, so both send the same
  // number of UploadPart requests for the same file.
  partSize: 8 * 1024 * 1024,
  s3ClientConfig: {
    bucket: need('BUCKET'),
    endpoint: need('AWS_ENDPOINT_URL_S3'),
    region: need('AWS_REGION'),
    // s3s-fs on loopback has no virtual-host DNS: buckets must be in the path.
    forcePathStyle: true,
    credentials: {
      accessKeyId: need('AWS_ACCESS_KEY_ID'),
      secretAccessKey: need('AWS_SECRET_ACCESS_KEY'),
    },
    // Our service sets WhenRequired too; without this the SDK computes a CRC32
    // of every part, which would charge the peer CPU we do not spend ourselves.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  },
})

const server = new Server({ path: '/files', datastore })

// Loopback only: the bench never needs anything else.
const http = server.listen({ host: '127.0.0.1', port }, () => {
  console.log('listening')
})
http.on('error', (err) => {
  console.error(`server.mjs: ${err.message}`)
  process.exit(1)
})

// Exit 0 when the parent stops us, so a deliberate stop is not read as a crash.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0))
}
