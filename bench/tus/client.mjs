// Peer client for benches/stream.rs: runs COUNT tus uploads of SIZE MiB at once
// with tus-js-client and prints {"seconds": <wall>, "bytes": <total>} on one line.
//
// usage: node client.mjs <endpoint, e.g. http://127.0.0.1:PORT/files> <size MiB> <count> [chunk MiB]
//   chunk MiB = 0 (default): one PATCH per upload, body streamed (fastest, see README).
//   chunk MiB > 0: tus-js-client's stock Readable-stream path, one PATCH per chunk.
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import tus from 'tus-js-client' // CommonJS package without "exports": use the default import

const [endpoint, sizeArg, countArg, chunkArg = '0'] = process.argv.slice(2)
const MiB = 1024 * 1024
const size = Number(sizeArg) * MiB
const count = Number(countArg)
const chunk = Number(chunkArg) * MiB
if (!endpoint || !(size > 0) || !(count >= 1) || !(chunk >= 0)) {
  console.error('usage: node client.mjs <endpoint> <size MiB> <count> [chunk MiB, 0 = one PATCH]')
  process.exit(2)
}

// The body is this 16 MiB of random bytes repeated, so nothing can compress or
// dedupe it and the client never holds a whole upload in memory.
const pattern = randomBytes(16 * MiB)

// A Readable giving bytes [start, end) of the repeated pattern, in 1 MiB views
// of `pattern` (subarray: no copy).
function patternStream(start, end) {
  let pos = start
  return new Readable({
    highWaterMark: 4 * MiB,
    read() {
      if (pos >= end) return this.push(null)
      const off = pos % pattern.length
      const n = Math.min(MiB, end - pos, pattern.length - off)
      pos += n
      this.push(pattern.subarray(off, off + n))
    },
  })
}

// tus-js-client's stock Readable source (StreamSource) insists on a finite
// chunkSize and gathers each chunk into one Buffer before its PATCH. With a
// custom fileReader whose slices are Readables with a `size`, the Node HTTP
// stack pipes the body instead (as it does for fs.ReadStream), so chunkSize may
// be Infinity: one PATCH streams the whole upload in constant memory.
const streamingReader = {
  openFile(input) {
    return Promise.resolve({
      size: input.size,
      slice(start, end) {
        const value = patternStream(start, end)
        value.size = end - start // read by the HTTP stack for Content-Length
        return Promise.resolve({ value, done: end >= input.size })
      },
      close() {},
    })
  },
}

function uploadOne() {
  return new Promise((resolve, reject) => {
    const common = {
      endpoint,
      uploadSize: size,
      metadata: { filename: 'bench.bin' },
      retryDelays: null, // a failure must fail the bench, not be retried quietly
      onError: reject,
      onSuccess: resolve,
    }
    const upload =
      chunk > 0
        ? new tus.Upload(patternStream(0, size), { ...common, chunkSize: chunk })
        : new tus.Upload({ size }, { ...common, fileReader: streamingReader })
    upload.start()
  })
}

const t0 = process.hrtime.bigint()
try {
  await Promise.all(Array.from({ length: count }, uploadOne))
} catch (err) {
  console.error(`client.mjs: ${err?.message ?? err}`)
  process.exit(1)
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9
console.log(JSON.stringify({ seconds, bytes: size * count }))
