// Package js holds Comet's browser client and demo page, for gateways to
// serve: comet.js (an ES module, the source file itself: there is no build
// step), its TypeScript declarations, the vendored SockJS browser build
// that comet.js loads when it falls back from WebSocket, and the demo page.
//
// The JavaScript sources, their tests (Node's test runner, and a real
// headless Chromium driven from e2e/browser_test.go) and package.json live
// beside this file; see docs/browser.md. Nothing here needs npm to build:
// vendor/sockjs.min.js is a copy of sockjs-client's dist/sockjs.min.js, at
// the exact version pinned in package.json (`npm run vendor` copies it
// again after an upgrade).
package js

import "embed"

// Files are the files served to browsers: comet.js,
// vendor/sockjs.min.js and demo/index.html.
//
//go:embed comet.js vendor/sockjs.min.js demo/index.html
var Files embed.FS
