// The Durable Streams conformance suite, pinned in package.json, against
// the server at CONFORMANCE_TEST_URL (e2e/dstream_test.go starts it).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({
  baseUrl: process.env.CONFORMANCE_TEST_URL,
  longPollTimeoutMs: Number(process.env.LONG_POLL_MS || 20000),
})
