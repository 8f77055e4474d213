package log

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/comethq/comet/internal/durable"
)

// syncLog records each directory synced while a test runs, with the names
// it held at that moment: a sync after which a name appears did not make
// that name durable.
type syncLog struct {
	mu    sync.Mutex
	syncs []dirSync
}

type dirSync struct {
	dir   string
	names []string
}

func recordSyncs(t *testing.T) *syncLog {
	t.Helper()
	s := &syncLog{}
	t.Cleanup(durable.Observe(func(dir string) {
		var names []string
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			names = append(names, e.Name())
		}
		s.mu.Lock()
		s.syncs = append(s.syncs, dirSync{dir, names})
		s.mu.Unlock()
	}))
	return s
}

// check fails the test unless dir was synced at a moment it held every name
// in has and none in hasNot.
func (s *syncLog) check(t *testing.T, what, dir string, has, hasNot []string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sy := range s.syncs {
		if sy.dir != dir {
			continue
		}
		ok := true
		for _, n := range has {
			ok = ok && slices.Contains(sy.names, n)
		}
		for _, n := range hasNot {
			ok = ok && !slices.Contains(sy.names, n)
		}
		if ok {
			return
		}
	}
	t.Errorf("%s: %s was never synced holding %q and not %q; syncs: %+v", what, dir, has, hasNot, s.syncs)
}

// TestOpenSyncsDirectories: Open of a new log creates its directories
// durably (each new directory's parent is synced) and syncs the directory
// once the bbolt file is in it, with and without DeferSync.
func TestOpenSyncsDirectories(t *testing.T) {
	for _, deferSync := range []bool{false, true} {
		base := t.TempDir()
		dir := filepath.Join(base, "data")
		path := filepath.Join(dir, "channels.db")
		s := recordSyncs(t)
		l, err := Open(Config{Path: path, DeferSync: deferSync})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		s.check(t, "new data directory", base, []string{"data"}, nil)
		s.check(t, "new channels.db", dir, []string{"channels.db"}, nil)
		if deferSync {
			s.check(t, "marker", dir, []string{"channels.db.state"}, []string{"channels.db.state.tmp"})
		}
	}
}

// TestOpenNoSyncSkipsDirectorySync: NoSync (tests, benchmarks) skips the
// sync of the file's directory too.
func TestOpenNoSyncSkipsDirectorySync(t *testing.T) {
	dir := t.TempDir()
	s := recordSyncs(t)
	mustOpenPath(t, filepath.Join(dir, "channels.db"), true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sy := range s.syncs {
		if sy.dir == dir {
			t.Fatalf("NoSync log synced its directory: %+v", s.syncs)
		}
	}
}

// TestRestoreSyncsDirectoryAfterRename: the restored file replaces the log
// by a rename, which is durable only once the directory is synced.
func TestRestoreSyncsDirectoryAfterRename(t *testing.T) {
	src := mustOpen(t)
	populate(t, src)
	snap := takeSnapshot(t, src)

	dir := t.TempDir()
	l := mustOpenPath(t, filepath.Join(dir, "channels.db"), false)
	s := recordSyncs(t)
	if err := l.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	s.check(t, "restore", dir, []string{"channels.db"}, []string{"channels.db.restore"})
}

// TestMoveAsideIsSynced: a file moved aside at Open (DeferSync after a
// power loss) stays aside: the directory is synced after the rename.
func TestMoveAsideIsSynced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "channels.db")
	withBootID(t, "boot-a")
	l := openDeferred(t, path)
	writeOne(t, l)
	abandon(t, l)
	withBootID(t, "boot-b")
	s := recordSyncs(t)
	l = openDeferred(t, path)
	defer l.Close()
	if !l.Rebuilt() {
		t.Fatal("not moved aside")
	}
	s.check(t, "move aside", dir, []string{"channels.db.untrusted", "channels.db.state"}, nil)
	s.check(t, "the new channels.db", dir, []string{"channels.db", "channels.db.untrusted"}, nil)
}
