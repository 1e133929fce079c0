// Runs the http-tests cache-tests suite (third_party/cache-tests) against the
// cache proxy and checks every required and optimal test against the list of
// known deviations below: a test off the list that does not pass, or one on
// it that now passes, fails the run. "Check" tests (questions without a right
// answer) are reported, not judged.
//
// Usage: node scripts/cache-conformance.mjs PROXY_BINARY [PROXY_ARGS…]
// (e.g. `--redis redis://127.0.0.1:6379` for a shared L2)
//
// The suite's origin is served here, on a loopback port of its own; the proxy
// is started in front of it (`--listen 127.0.0.1:0`) and the suite's client
// talks to the proxy.

import http from 'node:http'
import { spawn } from 'node:child_process'
import readline from 'node:readline'

import handleConfig from '../third_party/cache-tests/test-engine/server/handle-config.mjs'
import handleState from '../third_party/cache-tests/test-engine/server/handle-state.mjs'
import handleTest from '../third_party/cache-tests/test-engine/server/handle-test.mjs'
import { runTests, getResults } from '../third_party/cache-tests/test-engine/client/runner.mjs'
import { determineTestResult, resultTypes } from '../third_party/cache-tests/test-engine/lib/results.mjs'
import suites from '../third_party/cache-tests/tests/index.mjs'

// Required and optimal tests the proxy does not pass, and why. Keep it
// honest: a test that starts passing must come off the list.
const KNOWN = {
  // Deliberate: a shared cache in front of a multi-tenant API does not keep
  // answers that set cookies (one client's session would reach another).
  'headers-store-Set-Cookie': 'responses with Set-Cookie are not stored (by design)',
  'other-set-cookie': 'responses with Set-Cookie are not stored (by design)',
  // Deliberate: answers to requests with Authorization are cached only
  // where the layer is told they may be (`cache_authorized`), then per
  // tenant or per credential; the proxy is not told so.
  'other-authorization-public': 'Authorization bypasses the cache unless `cache_authorized` allows it',
  'other-authorization-must-revalidate': 'Authorization bypasses the cache unless `cache_authorized` allows it',
  'other-authorization-smaxage': 'Authorization bypasses the cache unless `cache_authorized` allows it',
  // Not implemented: ranges (206) are passed through, never stored or
  // served from a stored complete response.
  'partial-use-headers': 'partial content (206) is not combined or stored',
  'partial-use-stored-headers': 'partial content (206) is not combined or stored',
  'partial-store-partial-reuse-partial': 'partial content (206) is not combined or stored',
  'partial-store-complete-reuse-partial': 'ranges are not served from a stored complete response',
  'partial-store-complete-reuse-partial-no-last': 'ranges are not served from a stored complete response',
  'partial-store-complete-reuse-partial-suffix': 'ranges are not served from a stored complete response',
  'partial-store-partial-reuse-partial-byterange': 'partial content (206) is not combined or stored',
  'partial-store-partial-reuse-partial-absent': 'partial content (206) is not combined or stored',
  'partial-store-partial-reuse-partial-suffix': 'partial content (206) is not combined or stored',
  'partial-store-partial-complete': 'partial content (206) is not combined or stored',
  // Not implemented: the proxy's HTTP client (hyper) does not hand interim
  // (1xx) responses on, so the client never sees them.
  'interim-not-cached': 'interim (1xx) responses are not forwarded by the proxy',
  'interim-102': 'interim (1xx) responses are not forwarded by the proxy',
  'interim-103': 'interim (1xx) responses are not forwarded by the proxy',
  'interim-no-header-reuse': 'interim (1xx) responses are not forwarded by the proxy',
  // Strict where the grammar is: an Expires that is not an HTTP-date (wrong
  // case, a weekday that does not match the date) is in the past
  // (RFC 9111 §5.3).
  'freshness-expires-ansi-c': 'its weekday does not match its date: not an HTTP-date, so expired',
  'freshness-expires-wrong-case-weekday': 'wrong case is not an HTTP-date, so expired',
  'freshness-expires-wrong-case-month': 'wrong case is not an HTTP-date, so expired',
  'freshness-expires-wrong-case-tz': 'wrong case is not an HTTP-date, so expired',
  // Not implemented (all optional in RFC 9111).
  'heuristic-599-cached': 'heuristic freshness only for the statuses RFC 9110 calls heuristically cacheable',
  'method-POST': 'answers to POST are not stored',
  'vary-normalise-lang-order': 'Vary values are compared byte for byte, not normalised',
  'vary-normalise-lang-case': 'Vary values are compared byte for byte, not normalised',
  'vary-normalise-lang-space': 'Vary values are compared byte for byte, not normalised',
  'vary-normalise-lang-select': 'Vary values are compared byte for byte, not normalised',
  'vary-normalise-space': 'Vary values are compared byte for byte, not normalised',
  'conditional-lm-fresh-no-lm': 'If-Modified-Since is answered 304 only from a stored Last-Modified'
}

const NAMES = new Map(Object.entries(resultTypes).map(([name, type]) => [type, name]))
const PASSING = new Set(['pass', 'yes'])

function origin () {
  const server = http.createServer((request, response) => {
    const segments = new URL(request.url, 'http://localhost').pathname.split('/')
    segments.shift()
    const dispatch = segments.shift()
    if (dispatch === 'config') {
      handleConfig(segments, request, response)
    } else if (dispatch === 'test') {
      handleTest(segments, request, response)
    } else if (dispatch === 'state') {
      handleState(segments, request, response)
    } else {
      response.statusCode = 404
      response.end()
    }
  })
  // Node's idle timeout (5 s) is kept: one test's answer has a body that
  // ends only when its connection closes.
  return new Promise(resolve => server.listen(0, '127.0.0.1', () => resolve(server)))
}

function startProxy (binary, upstream, extra) {
  const proxy = spawn(binary, ['--upstream', upstream, '--listen', '127.0.0.1:0', ...extra], {
    stdio: ['ignore', 'pipe', 'inherit']
  })
  return new Promise((resolve, reject) => {
    proxy.on('error', reject)
    proxy.on('exit', code => reject(new Error(`the proxy exited (${code})`)))
    readline.createInterface({ input: proxy.stdout }).once('line', line => {
      const m = line.match(/on (http:\/\/\S+)/)
      if (m) resolve({ proxy, base: m[1] })
      else reject(new Error(`the proxy said: ${line}`))
    })
  })
}

const binary = process.argv[2]
if (!binary) {
  console.error('usage: node scripts/cache-conformance.mjs PROXY_BINARY [PROXY_ARGS…]')
  process.exit(2)
}
const server = await origin()
const { proxy, base } = await startProxy(binary, `http://127.0.0.1:${server.address().port}`, process.argv.slice(3))
proxy.removeAllListeners('exit')

let failed = false
try {
  await runTests(suites, false, base)
  const results = getResults()
  const counts = {}
  const lines = []
  for (const suite of suites) {
    for (const test of suite.tests) {
      if (test.browser_only) continue
      const kind = test.kind || 'required'
      // Each test on its own result: one that depends on a deviation
      // still says what it checks.
      const outcome = NAMES.get(determineTestResult(suites, test.id, results, false)) || 'unknown'
      const passed = PASSING.has(outcome)
      counts[kind] = counts[kind] || { pass: 0, total: 0 }
      counts[kind].total += 1
      counts[kind].pass += passed ? 1 : 0
      const detail = Array.isArray(results[test.id]) ? results[test.id].join(': ') : ''
      if (kind === 'check') {
        if (!passed) lines.push(`  check ${test.id} — no (${test.name})`)
        continue
      }
      const known = KNOWN[test.id]
      if (passed && known) {
        failed = true
        lines.push(`NOW PASSES ${kind} ${test.id}: take it off the list in scripts/cache-conformance.mjs`)
      } else if (!passed && !known) {
        failed = true
        lines.push(`FAILS ${kind} ${test.id} (${outcome}): ${detail} — ${test.name}`)
      } else if (!passed) {
        lines.push(`  known ${kind} ${test.id} (${outcome}): ${known}`)
      }
    }
  }
  for (const line of lines) console.log(line)
  for (const [kind, c] of Object.entries(counts)) {
    console.log(`${kind}: ${c.pass} of ${c.total} ${kind === 'check' ? 'answered yes' : 'pass'}`)
  }
  console.log(failed ? 'cache conformance: FAILED' : 'cache conformance: as expected')
} finally {
  proxy.kill('SIGTERM')
  server.close()
  server.closeAllConnections()
}
process.exit(failed ? 1 : 0)
