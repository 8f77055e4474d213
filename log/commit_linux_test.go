package log

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// failWrites makes every write to the bbolt file at path fail (EBADF), by
// putting a read-only descriptor of it in place of the one bbolt writes
// through, until the returned function puts the original back.
func failWrites(t *testing.T, path string) (restore func()) {
	t.Helper()
	want, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	fd := -1
	for _, e := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == want {
			if fd >= 0 {
				t.Fatalf("%s is open twice", path)
			}
			if _, err := fmt.Sscan(e.Name(), &fd); err != nil {
				t.Fatal(err)
			}
		}
	}
	if fd < 0 {
		t.Fatalf("%s is not open", path)
	}
	saved, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := syscall.Dup3(int(ro.Fd()), fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := syscall.Dup3(saved, fd, syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		syscall.Close(saved)
	}
}

// TestIdempotencyFailedCommit checks that an Update whose bbolt commit
// fails leaves the index as it was.
func TestIdempotencyFailedCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commit.db")
	l := mustOpenPath(t, path, true)
	mustInit(t, l)
	publish(t, l, 2, pub{"a", "k1", 0}, pub{"b", "k1", 0})
	before := dump(t, l)

	restore := failWrites(t, path)
	_, err := l.Update(3, func(tx *Tx) error {
		mustAppend(t, tx, "a", "k2", "x", t0.Add(time.Minute))
		mustAppend(t, tx, "c", "k1", "x", t0.Add(time.Minute))
		return tx.DeleteChannel("b", "E1")
	})
	restore()
	if err == nil {
		t.Fatal("Update committed with writes failing")
	}
	t.Logf("commit failed as wanted: %v", err)
	sameDump(t, "after a failed commit", dump(t, l), before)
	got := answers(t, l, pub{"a", "k1", time.Minute}, pub{"b", "k1", time.Minute}, pub{"a", "k2", time.Minute}, pub{"c", "k1", time.Minute})
	if want := []uint64{1, 1, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("answers %v, want %v", got, want)
	}
	// The log goes on.
	publish(t, l, 3, pub{"a", "k2", time.Minute})
	if l.HeldIDs() != 3 {
		t.Errorf("HeldIDs = %d, want 3", l.HeldIDs())
	}
}
