package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

func mustOpenFileStore(t *testing.T, path string) *FileStore {
	t.Helper()
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readState(t *testing.T, path string) map[string]Position {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st fileState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state file is not valid JSON: %v\n%s", err, b)
	}
	return st.Channels
}

func TestFileStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := mustOpenFileStore(t, path)
	if _, ok, err := s.Load("a"); ok || err != nil {
		t.Fatalf("empty store has a: %v", err)
	}
	s.Save("a", Position{Offset: 5, Epoch: "e1"})
	s.Save("b/c:d", Position{Offset: 1, Epoch: "e2"})
	s.Save("a", Position{Offset: 7, Epoch: "e1"})
	if p, ok, _ := s.Load("a"); !ok || p != (Position{7, "e1"}) {
		t.Fatalf("Load before a write: %+v", p)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Save("a", Position{8, "e1"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Save after Close: %v", err)
	}
	s2 := mustOpenFileStore(t, path)
	for ch, want := range map[string]Position{"a": {7, "e1"}, "b/c:d": {1, "e2"}} {
		if p, ok, _ := s2.Load(ch); !ok || p != want {
			t.Errorf("%s: %+v, want %+v", ch, p, want)
		}
	}
	if err := s2.Close(); err != nil || s2.Close() != nil {
		t.Fatal("Close is not idempotent")
	}
}

func TestFileStoreBadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	os.WriteFile(path, []byte("not json"), 0o600)
	if _, err := NewFileStore(path); err == nil {
		t.Fatal("a corrupt file was accepted")
	}
	os.WriteFile(path, nil, 0o600) // an empty file is an empty store
	mustOpenFileStore(t, path)
	if _, err := NewFileStore(filepath.Join(dir, "no-such-dir", "state.json")); err != nil {
		t.Fatalf("a missing file is an empty store: %v", err)
	}
}

// Saves in a burst are written together, at most once per
// FileStoreInterval; Flush writes at once.
func TestFileStoreCoalesces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := mustOpenFileStore(t, path)
	start := time.Now()
	for i := 1; i <= 2000; i++ {
		if err := s.Save("a", Position{Offset: uint64(i), Epoch: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	waitFor(t, 5*time.Second, "the background write", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && json.Valid(b) && readState(t, path)["a"].Offset == 2000
	})
	s.wmu.Lock()
	writes := s.writes
	s.wmu.Unlock()
	if max := int(elapsed/FileStoreInterval) + 2; writes > max {
		t.Fatalf("%d writes for 2000 saves in %v, want at most %d", writes, elapsed, max)
	}
	s.Save("a", Position{Offset: 2001, Epoch: "e"})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readState(t, path)["a"].Offset; got != 2001 {
		t.Fatalf("after Flush the file has %d", got)
	}
	if err := s.Flush(); err != nil { // nothing to write
		t.Fatal(err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.writes != writes+1 {
		t.Fatalf("%d writes, want %d", s.writes, writes+1)
	}
}

// A crash between writing the temporary file and renaming it leaves the
// previous version in place, and the next open cleans up.
func TestFileStoreAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	s := mustOpenFileStore(t, path)
	s.Save("a", Position{1, "e"})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash")
	s.setBeforeRename(func() error { return crash })
	s.Save("a", Position{2, "e"})
	if err := s.Flush(); !errors.Is(err, crash) {
		t.Fatalf("Flush: %v", err)
	}
	if got := readState(t, path)["a"]; got != (Position{1, "e"}) {
		t.Fatalf("after a failed write the file has %+v", got)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "state.json.tmp-*")); len(tmps) == 0 {
		t.Fatal("no temporary file left by the crash")
	}
	// The store still holds 2 and writes it once it can.
	s.setBeforeRename(nil)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readState(t, path)["a"]; got != (Position{2, "e"}) {
		t.Fatalf("file has %+v", got)
	}
	mustOpenFileStore(t, path)
	if tmps, _ := filepath.Glob(filepath.Join(dir, "state.json.tmp-*")); len(tmps) != 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}
}

// failBackgroundWrite saves a:1, makes its background write fail (a
// full disk), waits until the store keeps the failure, then lets writes
// succeed again.
func failBackgroundWrite(t *testing.T, s *FileStore) {
	t.Helper()
	failed := make(chan struct{})
	var once sync.Once
	s.setBeforeRename(func() error { once.Do(func() { close(failed) }); return errors.New("disk full") })
	s.Save("a", Position{1, "e"})
	<-failed
	waitFor(t, 5*time.Second, "the error to be kept", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.err != nil
	})
	s.setBeforeRename(nil)
}

// A background write that fails is reported by the next Save.
func TestFileStoreBackgroundError(t *testing.T) {
	s := mustOpenFileStore(t, filepath.Join(t.TempDir(), "state.json"))
	failBackgroundWrite(t, s)
	if err := s.Save("a", Position{2, "e"}); err == nil {
		t.Fatal("the failed write was not reported")
	}
}

// A background write that failed is not reported once a later write has
// put every position in the file: Flush then answers nil, and so does the
// next Save. (Flush once returned the earlier failure after its own write
// succeeded; seen on a loaded machine, where the background write of
// TestFileStoreAtomic ran while its crash hook was set.)
func TestFileStoreErrorClearedByLaterWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := mustOpenFileStore(t, path)
	failBackgroundWrite(t, s)
	if err := s.Flush(); err != nil {
		t.Fatalf("Flush after the disk came back: %v", err)
	}
	if got := readState(t, path)["a"]; got != (Position{1, "e"}) {
		t.Fatalf("file has %+v", got)
	}
	if err := s.Save("a", Position{2, "e"}); err != nil {
		t.Fatalf("Save reported a failure already repaired: %v", err)
	}
}

// A process killed (SIGKILL) while saving as fast as it can leaves a valid
// file with a recent position, three times in a row.
func TestFileStoreSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	var last uint64
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreChild$")
		cmd.Env = append(os.Environ(), "COMET_FILESTORE_CHILD="+path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := last + 50
		waitFor(t, 20*time.Second, fmt.Sprintf("offset %d in the file", want), func() bool {
			b, err := os.ReadFile(path)
			if err != nil {
				return false
			}
			var st fileState
			if err := json.Unmarshal(b, &st); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("torn file: %v\n%s", err, b)
			}
			return st.Channels["a"].Offset >= want
		})
		cmd.Process.Kill()
		cmd.Wait()
		s, err := NewFileStore(path)
		if err != nil {
			t.Fatalf("after kill %d: %v", round, err)
		}
		p, ok, _ := s.Load("a")
		s.Close()
		if !ok || p.Offset < want || p.Epoch != "e" {
			t.Fatalf("after kill %d: %+v", round, p)
		}
		last = p.Offset
	}
}

// TestFileStoreChild is the process TestFileStoreSurvivesKill kills: it
// resumes from the file and saves, flushing every time, for at most a
// minute.
func TestFileStoreChild(t *testing.T) {
	path := os.Getenv("COMET_FILESTORE_CHILD")
	if path == "" {
		t.Skip("run by TestFileStoreSurvivesKill")
	}
	s, err := NewFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	p, _, _ := s.Load("a")
	deadline := time.Now().Add(time.Minute)
	for i := p.Offset + 1; time.Now().Before(deadline); i++ {
		s.Save("a", Position{Offset: i, Epoch: "e"})
		s.Save("b"+strconv.FormatUint(i%7, 10), Position{Offset: i, Epoch: "e"})
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMemoryStore(t *testing.T) {
	m := NewMemoryStore()
	if _, ok, _ := m.Load("a"); ok {
		t.Fatal("empty store has a")
	}
	m.Save("a", Position{3, "e"})
	if p, ok, _ := m.Load("a"); !ok || p != (Position{3, "e"}) {
		t.Fatalf("got %+v", p)
	}
}

func (s *FileStore) setBeforeRename(f func() error) {
	s.mu.Lock()
	s.beforeRename = f
	s.mu.Unlock()
}
