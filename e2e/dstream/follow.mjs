// follow.mjs follows a JSON Durable Stream from its start with the official
// TypeScript client (@durable-streams/client) in a live mode, and prints one
// line per message to stdout: {"msg":<the message>,"offset":"<token>"},
// offset being the Stream-Next-Offset of the batch the message came in (the
// point to resume from after that batch). It exits 0 after COUNT messages,
// 1 on a fatal error. Driven by e2e/dstream_test.go.
//
// Environment: STREAM_URL (the stream), COUNT, LIVE ("long-poll" or
// "sse"), DEADLINE_MS (give up after this long; default 120000), TOKEN (a
// bearer token, optional).
//
// Resuming: the client retries a request that fails to connect or answers
// 429 or 5xx on its own (its backoff; each failed attempt is noted on
// stderr). It does not resume a session whose response breaks off (an SSE
// connection or a long-poll body cut by a dying server errors the
// session), nor one whose SSE connections kept ending early (it then ends
// the session). This script then starts a new session from the last offset
// it was given, the protocol's resume story, and notes it on stderr.

import { stream } from "@durable-streams/client"

const url = process.env.STREAM_URL
const count = Number(process.env.COUNT)
const live = process.env.LIVE
const deadline = Date.now() + Number(process.env.DEADLINE_MS || 120000)
const headers = process.env.TOKEN ? { Authorization: `Bearer ${process.env.TOKEN}` } : undefined
const maxResumes = 100

if (!url || !(count > 0) || (live !== "long-poll" && live !== "sse")) {
  process.stderr.write("usage: STREAM_URL=... COUNT=n LIVE=long-poll|sse node follow.mjs\n")
  process.exit(2)
}

const note = (o) => process.stderr.write(JSON.stringify(o) + "\n")
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let offset = "-1"
let seen = 0
let failedAttempts = 0
let resumes = 0

// session reads from offset until COUNT messages were printed (resolves
// true), the session ends (resolves false) or fails (rejects).
async function session() {
  const res = await stream({
    url,
    headers,
    offset,
    live,
    json: true,
    backoffOptions: {
      initialDelay: 50,
      maxDelay: 1000,
      multiplier: 1.5,
      maxRetries: Infinity,
      onFailedAttempt: () => {
        if (seen >= count) return // the request unsubscribing aborted
        failedAttempts++
        note({ failedAttempt: failedAttempts, offset })
      },
    },
    sseResilience: { logWarnings: false },
  })
  return new Promise((resolve, reject) => {
    let done = false
    const unsubscribe = res.subscribeJson((batch) => {
      if (done) return
      for (const msg of batch.items) {
        process.stdout.write(JSON.stringify({ msg, offset: batch.offset }) + "\n")
        seen++
      }
      offset = batch.offset
      if (seen >= count) {
        done = true
        unsubscribe()
        resolve(true)
      }
    })
    res.closed.then(
      () => {
        if (!done) {
          done = true
          resolve(false)
        }
      },
      (err) => {
        if (!done) {
          done = true
          res.cancel()
          reject(err)
        }
      },
    )
  })
}

let pause = 50
for (;;) {
  const before = seen
  let why
  try {
    if (await session()) break
    why = "the session ended"
  } catch (err) {
    const status = err?.status
    if (status === 404 || status === 410) {
      note({ fatal: String(err?.message ?? err), status, offset, seen })
      process.exit(1)
    }
    why = `${err?.name ?? "Error"}: ${err?.message ?? err}${err?.cause ? ` (${err.cause.message ?? err.cause})` : ""}`
  }
  resumes++
  if (resumes > maxResumes || Date.now() > deadline) {
    note({ fatal: `gave up after ${resumes} resumes: ${why}`, offset, seen })
    process.exit(1)
  }
  pause = seen > before ? 50 : Math.min(pause * 2, 1000)
  note({ resume: resumes, from: offset, seen, why })
  await sleep(pause)
}
note({ summary: { messages: seen, resumes, failedAttempts, live } })
process.stdout.write("", () => process.exit(0))
