package durable

import (
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
)

// recordSyncs records the directories synced while the test runs.
func recordSyncs(t *testing.T) func() []string {
	t.Helper()
	var (
		mu     sync.Mutex
		synced []string
	)
	stop := Observe(func(dir string) {
		mu.Lock()
		synced = append(synced, dir)
		mu.Unlock()
	})
	t.Cleanup(stop)
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), synced...)
	}
}

// TestMkdirAllSyncsEachCreatedDirsParent: creating a/b/c under an existing
// base syncs base, a and a/b (each new directory's parent), and nothing
// when all exist.
func TestMkdirAllSyncsEachCreatedDirsParent(t *testing.T) {
	base := t.TempDir()
	synced := recordSyncs(t)
	dir := filepath.Join(base, "a", "b", "c")
	if err := MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("%s: %v", dir, err)
	}
	want := []string{base, filepath.Join(base, "a"), filepath.Join(base, "a", "b")}
	if got := synced(); !reflect.DeepEqual(got, want) {
		t.Fatalf("synced %q, want %q", got, want)
	}
	if err := MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	want = append(want, dir)
	if got := synced(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after MkdirAll of existing dirs and one more: synced %q, want %q", got, want)
	}
}

// TestMkdirAllRelative: a relative path's first new directory is synced
// in the working directory.
func TestMkdirAllRelative(t *testing.T) {
	t.Chdir(t.TempDir())
	synced := recordSyncs(t)
	if err := MkdirAll("data/raft", 0o755); err != nil {
		t.Fatal(err)
	}
	if got, want := synced(), []string{".", "data"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("synced %q, want %q", got, want)
	}
}

// TestMkdirAllUnderAFile fails, as os.MkdirAll does, and creates nothing.
func TestMkdirAllUnderAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	synced := recordSyncs(t)
	if err := MkdirAll(filepath.Join(f, "data"), 0o755); err == nil {
		t.Fatal("MkdirAll under a file succeeded")
	}
	if err := MkdirAll(f, 0o755); err == nil {
		t.Fatal("MkdirAll of a file succeeded")
	}
	if got := synced(); len(got) != 0 {
		t.Fatalf("synced %q", got)
	}
}

func TestSyncDirErrors(t *testing.T) {
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("SyncDir of a missing directory succeeded")
	}
}

func TestObserveStops(t *testing.T) {
	calls := 0
	stop := Observe(func(string) { calls++ })
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	stop()
	stop()
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("observer called %d times, want 1", calls)
	}
}
