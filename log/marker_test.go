package log

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// withBootID points the boot id at a file holding id, for one test.
func withBootID(t *testing.T, id string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := bootIDPath
	bootIDPath = p
	t.Cleanup(func() { bootIDPath = old })
}

func openDeferred(t *testing.T, path string) *Log {
	t.Helper()
	l, err := Open(Config{Path: path, DeferSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func writeOne(t *testing.T, l *Log) {
	t.Helper()
	_, err := l.Update(l.Applied()+1, func(tx *Tx) error {
		if err := tx.InitEpoch("e1"); err != nil {
			return err
		}
		_, err := tx.Append("c", "", []byte(`1`), time.Unix(100, 0))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeferSyncTrustsFileInSameBootOrAfterCleanClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "channels.db")
	withBootID(t, "boot-a")

	// Clean close, then a reboot: trusted.
	l := openDeferred(t, path)
	writeOne(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	withBootID(t, "boot-b")
	l = openDeferred(t, path)
	if l.Rebuilt() || l.Applied() != 1 {
		t.Fatalf("after a clean close: rebuilt %v applied %d, want false 1", l.Rebuilt(), l.Applied())
	}

	// Left open (kill -9), same boot: trusted, the page cache had it all.
	writeOne(t, l)
	abandon(t, l)
	l = openDeferred(t, path)
	defer l.Close()
	if l.Rebuilt() || l.Applied() != 2 {
		t.Fatalf("after kill -9 in the same boot: rebuilt %v applied %d, want false 2", l.Rebuilt(), l.Applied())
	}
}

func TestDeferSyncMovesAsideFileLeftOpenInAnotherBoot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "channels.db")
	withBootID(t, "boot-a")
	l := openDeferred(t, path)
	writeOne(t, l)
	abandon(t, l)

	withBootID(t, "boot-b") // the machine restarted without a clean close
	l = openDeferred(t, path)
	defer l.Close()
	if !l.Rebuilt() {
		t.Fatal("a file left open in another boot must not be trusted")
	}
	if l.Applied() != 0 {
		t.Fatalf("rebuilt log applied = %d, want 0 (empty)", l.Applied())
	}
	if _, err := os.Stat(path + ".untrusted"); err != nil {
		t.Fatalf("the untrusted file should be kept aside: %v", err)
	}
}

func TestDeferSyncWithoutMarkerIsNotTrusted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "channels.db")
	withBootID(t, "boot-a")
	l := openDeferred(t, path)
	writeOne(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(markerPath(path)); err != nil {
		t.Fatal(err)
	}
	l = openDeferred(t, path)
	defer l.Close()
	if !l.Rebuilt() {
		t.Fatal("a file with no marker cannot be known to be synced")
	}
}

// abandon closes the bbolt file without what Close does for DeferSync (no
// sync, no clean marker): what a kill -9 leaves.
func abandon(t *testing.T, l *Log) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if err := l.db.Close(); err != nil {
		t.Fatal(err)
	}
}
