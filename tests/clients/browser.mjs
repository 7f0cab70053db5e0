// Headless Chromium on browser/index.html (served from another origin than the service) for
// tests/browser.rs: tus discovery, an upload with tus-js-client, and a download cut and resumed
// with Range + If-Range. Prints one JSON line: {"discover", "upload", "download"}, or {"error"}.
//
// usage: node browser.mjs '<json: {page, service, token, download: {fileId, cutAt},
//                                  upload: {fileId, size, chunkSize}}>'
// The browser is Debian's chromium (PF_CHROMIUM overrides the path); puppeteer-core never
// downloads one.
import puppeteer from 'puppeteer-core'

const args = JSON.parse(process.argv[2])
const say = (event) => console.log(JSON.stringify(event))

const browser = await puppeteer.launch({
  executablePath: process.env.PF_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-dev-shm-usage'],
})
try {
  const page = await browser.newPage()
  const console_ = []
  page.on('console', (m) => console_.push(m.text()))
  page.on('pageerror', (e) => console_.push(String(e)))
  const res = await page.goto(args.page, { waitUntil: 'load' })
  if (!res.ok()) throw new Error(`the page: ${res.status()}`)
  const out = await page.evaluate(async ({ service, token, download, upload }) => {
    const pf = window.pf
    // Errors cross into Node as their text.
    const attempt = async (f) => {
      try { return await f() } catch (e) { return { error: String(e && e.stack || e) } }
    }
    const discover = await attempt(() => pf.discover({ service }))
    const uploaded = await attempt(async () => {
      const { file, sha256 } = await pf.randomFile(upload.size, 'application/octet-stream')
      return { ...(await pf.upload({ service, token, file, ...upload })), sha256 }
    })
    const downloaded = await attempt(() => pf.download({ service, token, ...download }))
    return { discover, upload: uploaded, download: downloaded }
  }, args)
  say({ ...out, console: console_ })
} catch (e) {
  say({ error: String(e && e.stack || e) })
  process.exitCode = 1
} finally {
  await browser.close()
}
