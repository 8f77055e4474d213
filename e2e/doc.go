// Package e2e holds end-to-end tests that run real comet processes.
package e2e
