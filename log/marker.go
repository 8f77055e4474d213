package log

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/comethq/comet/internal/durable"
)

// bootIDPath names the kernel's random id of the current boot. It changes
// when the machine restarts, and only then.
var bootIDPath = "/proc/sys/kernel/random/boot_id"

func bootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// The marker file beside a DeferSync log says whether the log file can be
// trusted at the next Open: "clean" after a Close that synced it, "open
// BOOTID" while a process uses it. Writes that were not fsynced survive the
// end of the process (kill -9 included) in the page cache, but not the end
// of the boot (power loss, kernel crash): a log left open in another boot
// may be torn.
func markerPath(path string) string { return path + ".state" }

func writeMarker(path, content string) error {
	tmp := markerPath(path) + ".tmp"
	if err := os.WriteFile(tmp, []byte(content+"\n"), 0o600); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, markerPath(path)); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(path))
}

// checkDeferred decides, before opening a DeferSync log, whether its file can
// be trusted. When it cannot, the file is moved aside (path.untrusted) and
// the log starts empty: the caller rebuilds it (Raft restores its last
// snapshot and replays its log). It returns whether that happened.
func checkDeferred(path, boot string) (bool, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	m, err := os.ReadFile(markerPath(path))
	switch {
	case err == nil:
		state := string(bytes.TrimSpace(m))
		if state == "clean" || state == "open "+boot {
			return false, nil
		}
	case errors.Is(err, os.ErrNotExist):
		// A log written before markers, or with fsync on: it was synced
		// at every commit only if it never ran deferred; we cannot tell.
	default:
		return false, fmt.Errorf("log: read %s: %w", markerPath(path), err)
	}
	if err := os.Rename(path, path+".untrusted"); err != nil {
		return false, fmt.Errorf("log: move aside %s: %w", path, err)
	}
	return true, nil
}
