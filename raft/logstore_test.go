package raft

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
)

// testSegmentSize makes raft-wal seal and rotate segments often in tests.
const testSegmentSize = 16 << 10

// openTestStore opens the log store in dir with small segments and no
// fsync.
func openTestStore(t testing.TB, dir string) *walStore {
	t.Helper()
	s, err := openLogStore(dir, testSegmentSize, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// logModel is what a log store must hold: its entries by index.
type logModel struct {
	first, last uint64
	logs        map[uint64]*hraft.Log
}

func newLogModel() *logModel { return &logModel{logs: map[uint64]*hraft.Log{}} }

func (m *logModel) store(logs []*hraft.Log) {
	for _, l := range logs {
		m.logs[l.Index] = l
	}
	if m.first == 0 {
		m.first = logs[0].Index
	}
	m.last = logs[len(logs)-1].Index
}

func (m *logModel) deleteRange(lo, hi uint64) {
	for i := lo; i <= hi; i++ {
		delete(m.logs, i)
	}
	switch {
	case lo <= m.first && hi >= m.last:
		m.first, m.last = 0, 0
	case lo <= m.first:
		m.first = hi + 1
	default:
		m.last = lo - 1
	}
}

func testLogs(rng *rand.Rand, from uint64, n int, term uint64, maxData int) []*hraft.Log {
	logs := make([]*hraft.Log, n)
	for i := range logs {
		data := make([]byte, rng.IntN(maxData+1))
		for k := range data {
			data[k] = byte(rng.Uint32())
		}
		l := &hraft.Log{Index: from + uint64(i), Term: term, Type: hraft.LogCommand, Data: data}
		if rng.IntN(4) == 0 {
			l.Extensions = []byte("ext")
		}
		if rng.IntN(2) == 0 {
			l.AppendedAt = time.Unix(1700000000, int64(rng.IntN(1e9))).UTC()
		}
		logs[i] = l
	}
	return logs
}

// checkLog compares s with m, entry by entry.
func checkLog(t testing.TB, s hraft.LogStore, m *logModel, step string) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatalf("%s: FirstIndex: %v", step, err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatalf("%s: LastIndex: %v", step, err)
	}
	if first != m.first || last != m.last {
		t.Fatalf("%s: entries %d-%d, want %d-%d", step, first, last, m.first, m.last)
	}
	for i := m.first; i <= m.last && m.last != 0; i++ {
		var got hraft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("%s: GetLog(%d): %v", step, i, err)
		}
		if !sameLog(&got, m.logs[i]) {
			t.Fatalf("%s: entry %d is %+v, want %+v", step, i, got, *m.logs[i])
		}
	}
	var l hraft.Log
	if err := s.GetLog(m.last+1, &l); !errors.Is(err, hraft.ErrLogNotFound) {
		t.Fatalf("%s: GetLog past the end: %v, want ErrLogNotFound", step, err)
	}
}

// TestLogStoreModel runs random appends, prefix deletions (compaction),
// suffix deletions (a follower dropping a conflicting tail) and reopens
// against a model, with segments small enough that appends seal and
// rotate them all through the run (and the spare segment is used). It
// checks the log store as Comet sets it up, raft-wal over walFS, not
// raft-wal's own logic alone.
func TestLogStoreModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			dir := t.TempDir()
			noSync := seed != 1 // one run with fdatasync, for its code paths
			open := func() *walStore {
				s, err := openLogStore(dir, testSegmentSize, noSync, nil)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			s := open()
			defer func() { s.Close() }()
			m := newLogModel()
			term := uint64(1)
			for op := 0; op < 400; op++ {
				var step string
				switch r := rng.IntN(100); {
				case r < 72:
					n := 1 + rng.IntN(6)
					logs := testLogs(rng, m.last+1, n, term, 1500)
					step = fmt.Sprintf("op %d: store %d-%d", op, m.last+1, m.last+uint64(n))
					if err := s.StoreLogs(logs); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
					m.store(logs)
				case r < 80 && m.last > m.first:
					hi := m.first + uint64(rng.IntN(int(m.last-m.first)))
					step = fmt.Sprintf("op %d: delete prefix %d-%d", op, m.first, hi)
					if err := s.DeleteRange(m.first, hi); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
					m.deleteRange(m.first, hi)
				case r < 88 && m.last > m.first:
					lo := m.first + 1 + uint64(rng.IntN(int(m.last-m.first)))
					step = fmt.Sprintf("op %d: delete suffix %d-%d", op, lo, m.last)
					if err := s.DeleteRange(lo, m.last); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
					m.deleteRange(lo, m.last)
					term++ // a new leader's entries replace them
				default:
					step = fmt.Sprintf("op %d: close and reopen", op)
					if err := s.Close(); err != nil {
						t.Fatalf("%s: %v", step, err)
					}
					s = open()
				}
				checkLog(t, s, m, step)
			}
		})
	}
}

// TestLogStoreStable: the stable store keeps Raft's term and vote across
// a reopen.
func TestLogStoreStable(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("h2")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir)
	defer s.Close()
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("CurrentTerm %d, %v; want 7", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "h2" {
		t.Fatalf("LastVoteCand %q, %v; want h2", v, err)
	}
}

// TestLogStoreLocked: a second process (here a second open) on the same
// directory is refused at once, saying why.
func TestLogStoreLocked(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		s2, err := openLogStore(dir, testSegmentSize, true, nil)
		if err == nil {
			s2.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "locked by another process") {
			t.Fatalf("second open: %v; want it refused as locked", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a second open of a directory in use waits instead of failing")
	}
}

// TestLogStoreReadsDuringAppends reads entries from other goroutines while
// appends seal and rotate segments (for the race detector; and every entry
// read is the one stored).
func TestLogStoreReadsDuringAppends(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	defer s.Close()
	var (
		mu     sync.Mutex
		stored = map[uint64][]byte{}
		last   uint64
		done   = make(chan struct{})
		wg     sync.WaitGroup
	)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-done:
					return
				default:
				}
				mu.Lock()
				n := last
				mu.Unlock()
				if n == 0 {
					continue
				}
				i := 1 + rng.Uint64N(n)
				var l hraft.Log
				if err := s.GetLog(i, &l); err != nil {
					t.Errorf("GetLog(%d): %v", i, err)
					return
				}
				mu.Lock()
				want := stored[i]
				mu.Unlock()
				if !bytes.Equal(l.Data, want) {
					t.Errorf("entry %d: wrong data", i)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := uint64(1); i <= 2000; i++ {
		logs := testLogs(rng, i, 1, 1, 300)
		if err := s.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		stored[i] = logs[0].Data
		last = i
		mu.Unlock()
	}
	close(done)
	wg.Wait()
}

// TestWalFSSegments: every segment file is written whole (zeros) before
// raft-wal gets it, so that an append changes no file metadata; a spare is
// kept ready; and the spare left by a process that stopped while making it
// is made anew.
func TestWalFSSegments(t *testing.T) {
	dir := t.TempDir()
	// A spare cut short by a crash.
	if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "wal", spareName), []byte("cut"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openTestStore(t, dir)
	rng := rand.New(rand.NewPCG(3, 3))
	var next uint64 = 1
	for range 200 { // several segments' worth
		logs := testLogs(rng, next, 1, 1, 400)
		if err := s.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		next++
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	segs := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".wal") && e.Name() != spareName {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		// raft-wal writes a sealed segment's index after its size limit.
		if fi.Size() < testSegmentSize {
			t.Errorf("%s is %d bytes, want at least %d (written whole)", e.Name(), fi.Size(), testSegmentSize)
		}
		if strings.HasSuffix(e.Name(), ".wal") {
			segs++
		}
	}
	if segs < 3 {
		t.Fatalf("%d segments: the test no longer rotates segments", segs)
	}
	if _, err := os.Stat(filepath.Join(dir, "wal", spareName)); err != nil {
		t.Fatalf("no spare segment after Close: %v", err)
	}
}

// TestLogStoreSealedTail: a stop between raft-wal's seal of a full segment
// (written by the append that filled it) and its record of the seal in the
// metadata (on raft-wal's own goroutine) leaves a tail segment that is
// sealed on disk only. raft-wal alone then refuses every later append
// (ErrSealed); openLogStore finishes the rotation and appends go on. The
// test builds that directory from one whose rotation completed, by taking
// the rotation back out of the metadata.
func TestLogStoreSealedTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	all := testLogs(rng, 1, 1000, 1, 500)
	// A first run finds the append that fills (and seals) the first
	// segment: the one after which the next segment starts.
	probe := openTestStore(t, t.TempDir())
	sealing := 0
	for i, l := range all {
		if err := probe.StoreLogs([]*hraft.Log{l}); err != nil {
			t.Fatal(err)
		}
		if i > 0 && segmentsOf(t, probe) > 1 {
			// The rotation that followed append i-1 has made the next file
			// (append i waited for it).
			sealing = i
			break
		}
	}
	probe.Close()
	if sealing == 0 {
		t.Fatal("no rotation after 1000 appends")
	}

	dir := t.TempDir()
	walDir := filepath.Join(dir, "wal")
	s := openTestStore(t, dir)
	m := newLogModel()
	for _, l := range all[:sealing] {
		if err := s.StoreLogs([]*hraft.Log{l}); err != nil {
			t.Fatal(err)
		}
		m.store([]*hraft.Log{l})
	}
	if err := s.Close(); err != nil { // the rotation may or may not have run
		t.Fatal(err)
	}
	// Take the rotation back, if it ran: the last segment unsealed, no
	// tail after it.
	meta := &metadb.BoltMetaDB{}
	st, err := meta.Load(walDir)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(st.Segments); n == 2 {
		newTail := st.Segments[1]
		if newTail.BaseIndex != m.last+1 {
			t.Fatalf("segments %+v: want the second to start after entry %d", st.Segments, m.last)
		}
		st.Segments = st.Segments[:1]
		st.Segments[0].SealTime, st.Segments[0].IndexStart, st.Segments[0].MaxIndex = time.Time{}, 0, 0
		st.NextSegmentID--
		if err := meta.CommitState(st); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(walDir, segment.FileName(newTail))); err != nil {
			t.Fatal(err)
		}
	} else if n != 1 || !st.Segments[0].SealTime.IsZero() {
		t.Fatalf("segments %+v: want one unsealed or a sealed one and a tail", st.Segments)
	}
	meta.Close()
	segments := func() []string {
		ents, err := os.ReadDir(walDir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".wal") {
				names = append(names, e.Name())
			}
		}
		return names
	}

	// raft-wal alone, on a copy: the next append is refused. (If this
	// changes, raft-wal fixed it and repairSealedTail can go.)
	copyDir := t.TempDir()
	for _, name := range append(segments(), "wal-meta.db") {
		b, err := os.ReadFile(filepath.Join(walDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	plain, err := openRaftWal(copyDir, testSegmentSize, walfs.New(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.StoreLogs(all[sealing : sealing+1]); !errors.Is(err, wal.ErrSealed) {
		t.Logf("raft-wal alone: the append after an interrupted rotation gave %v (ErrSealed before)", err)
	}
	plain.Close()

	s = openTestStore(t, dir)
	defer s.Close()
	for _, l := range all[sealing : sealing+3] {
		if err := s.StoreLogs([]*hraft.Log{l}); err != nil {
			t.Fatalf("append after the interrupted rotation: %v", err)
		}
		m.store([]*hraft.Log{l})
	}
	checkLog(t, s, m, "after the repair")
}

// segmentsOf counts the segment files of an open store.
func segmentsOf(t *testing.T, s *walStore) int {
	t.Helper()
	ents, err := os.ReadDir(s.fs.dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".wal") {
			n++
		}
	}
	return n
}

// TestLogStoreHealsAfterFailedRotation: when raft-wal cannot make the next
// segment (walFS cannot write the spare: a full disk), appends fail, the
// log stays readable, and once spares can be written again appends
// succeed, without a reopen by the caller; every acknowledged entry is
// there, then and after a reopen.
func TestLogStoreHealsAfterFailedRotation(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	defer func() { s.Close() }()
	if err := s.fs.ensureSpare(); err != nil {
		t.Fatal(err)
	}
	s.fs.failNextSpares(1 << 30)
	m := newLogModel()
	next := uint64(1)
	var errs []error
	for i := 0; i < 5000 && len(errs) < 3; i++ {
		logs := markedLogs(next, next)
		if err := s.StoreLogs(logs); err != nil {
			errs = append(errs, err) // not acknowledged: the same index again
			continue
		}
		m.store(logs)
		next++
	}
	if len(errs) < 3 {
		t.Fatalf("%d appends failed while no segment could be made", len(errs))
	}
	for _, err := range errs {
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("append on a full disk: %v; want it to wrap ENOSPC", err)
		}
	}
	t.Logf("append on a full disk: %v", errs[0])
	checkLog(t, s, m, "while no segment can be made")

	s.fs.failNextSpares(0)
	for range 300 { // more than a segment's worth
		logs := markedLogs(next, next)
		if err := s.StoreLogs(logs); err != nil {
			t.Fatalf("append %d after space returned: %v", next, err)
		}
		m.store(logs)
		next++
	}
	checkLog(t, s, m, "after space returned")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir)
	checkLog(t, s, m, "reopened")
}

// TestWalFSNoShortSpare: a spare that cannot be written whole is removed,
// and Create fails rather than hand raft-wal a short file; it makes the
// spare again on the next call.
func TestWalFSNoShortSpare(t *testing.T) {
	dir := t.TempDir()
	w := newWalFS(dir, testSegmentSize, true)
	defer w.Close()
	if err := w.ensureSpare(); err != nil {
		t.Fatal(err)
	}
	w.failNextSpares(2)
	f, err := w.Create(dir, "a.wal", testSegmentSize) // the ready spare
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The next spare (made in the background) failed; Create tries once
	// more, and fails too.
	if _, err := w.Create(dir, "b.wal", testSegmentSize); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Create with no spare: %v; want ENOSPC", err)
	}
	for _, name := range []string{"b.wal", spareName} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after a failed Create: %v; want none", name, err)
		}
	}
	f, err = w.Create(dir, "b.wal", testSegmentSize)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(filepath.Join(dir, "b.wal")); err != nil || fi.Size() != testSegmentSize {
		t.Fatalf("b.wal: %v, %v; want %d bytes", fi, err, testSegmentSize)
	}
}

// TestNodeFullDiskRefusesThenRecovers: a leader whose Raft log cannot make
// its next segment (spares fail with ENOSPC) refuses entries with
// ErrUnknownOutcome wrapping ENOSPC, without a panic; once spares can be
// made again it takes entries, without a restart, and every acknowledged
// entry is in the channel log.
func TestNodeFullDiskRefusesThenRecovers(t *testing.T) {
	c := newCluster(t, 1)
	tn := c.leader()
	ws := tn.node.store.s.(*walStore)
	if err := ws.fs.ensureSpare(); err != nil {
		t.Fatal(err)
	}
	ws.fs.failNextSpares(1 << 30)
	acked := 0
	var failed error
	for i := 0; i < 500 && failed == nil; i++ {
		_, err := tn.node.Apply(&Command{Publish: []Publish{{Channel: "chat", ID: fmt.Sprint("m", i), Data: []byte("x")}}})
		switch {
		case err == nil:
			acked++
		case errors.Is(err, ErrNotLeader):
		default:
			failed = err
		}
	}
	if failed == nil {
		t.Fatal("no entry refused while no segment could be made")
	}
	if !errors.Is(failed, ErrUnknownOutcome) || !errors.Is(failed, syscall.ENOSPC) {
		t.Fatalf("refused entry: %v; want ErrUnknownOutcome wrapping ENOSPC", failed)
	}
	t.Logf("refused: %v", failed)
	if err := tn.node.LogFault(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("LogFault while appends fail: %v; want ENOSPC (readiness reads it)", err)
	}
	ws.fs.failNextSpares(0)
	more := 0
	waitFor(t, 20*time.Second, "entries taken again", func() bool {
		_, err := tn.node.Apply(&Command{Publish: []Publish{{Channel: "chat", ID: fmt.Sprint("n", more), Data: []byte("y")}}})
		if err == nil {
			more++
		}
		return more >= 20
	})
	waitFor(t, 10*time.Second, "every acknowledged entry applied", func() bool {
		_, msgs, err := tn.log.Read("chat", 1, 10000)
		return err == nil && len(msgs) >= acked+more
	})
	if err := tn.node.LogFault(); err != nil {
		t.Fatalf("LogFault after appends succeed again: %v", err)
	}
}

// TestWalFSSpareZeros checks the spare is size zero bytes, whether it is
// written with O_DIRECT (a disk file system) or through the page cache
// (tmpfs refuses O_DIRECT: /dev/shm, where there is one).
func TestWalFSSpareZeros(t *testing.T) {
	dirs := []string{t.TempDir()}
	if shm, err := os.MkdirTemp("/dev/shm", "walfs"); err == nil {
		t.Cleanup(func() { os.RemoveAll(shm) })
		dirs = append(dirs, shm)
	}
	for _, dir := range dirs {
		for _, size := range []uint64{testSegmentSize, 3<<20 + 4096, 5000} {
			// A spare left over, longer and not zero, is replaced.
			if err := os.WriteFile(filepath.Join(dir, spareName), bytes.Repeat([]byte{7}, int(size)+9000), 0o600); err != nil {
				t.Fatal(err)
			}
			w := newWalFS(dir, size, false)
			if err := w.ensureSpare(); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, spareName))
			if err != nil {
				t.Fatal(err)
			}
			if uint64(len(data)) != size {
				t.Errorf("%s, size %d: spare is %d bytes", dir, size, len(data))
			}
			if i := bytes.IndexFunc(data, func(r rune) bool { return r != 0 }); i >= 0 {
				t.Errorf("%s, size %d: byte %d of the spare is not zero", dir, size, i)
			}
			w.Close()
		}
	}
}

// TestWalFSDirectRefusedAtWrite: a file system that takes O_DIRECT at
// open but refuses its writes (EINVAL) gets the spare through the page
// cache, whole and zero whatever the refused attempt left, and the spares
// after it go there at once.
func TestWalFSDirectRefusedAtWrite(t *testing.T) {
	dir := t.TempDir()
	const size = 4 << 20
	w := newWalFS(dir, size, true)
	defer w.Close()
	if err := w.ensureSpare(); err != nil {
		t.Fatal(err)
	}
	calls := 0
	w.mu.Lock() // no spare is being made: the next one starts under mu
	w.directZeros = func(f *os.File, _ uint64, _ bool) error {
		calls++
		junk := alignedZeros(1 << 20)
		for i := range junk {
			junk[i] = 7
		}
		if _, err := f.WriteAt(junk, 0); err != nil {
			return err
		}
		return &os.PathError{Op: "write", Path: f.Name(), Err: syscall.EINVAL}
	}
	w.mu.Unlock()
	for i, name := range []string{"a.wal", "b.wal"} {
		f, err := w.Create(dir, name, size) // takes the spare, starts the next
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := w.ensureSpare(); err != nil {
			t.Fatalf("spare %d: %v", i+2, err)
		}
		data, err := os.ReadFile(filepath.Join(dir, spareName))
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != size || bytes.IndexFunc(data, func(r rune) bool { return r != 0 }) >= 0 {
			t.Fatalf("spare %d: %d bytes, not all zero", i+2, len(data))
		}
	}
	w.mu.Lock()
	buffered := w.buffered
	w.mu.Unlock()
	if calls != 1 || !buffered {
		t.Fatalf("O_DIRECT tried %d times (want 1: the refusal is remembered), buffered %v", calls, buffered)
	}
}

func TestAlignedZeros(t *testing.T) {
	for _, n := range []int{directAlign, 1 << 20} {
		b := alignedZeros(n)
		if len(b) != n || cap(b) != n || uintptr(unsafe.Pointer(&b[0]))%directAlign != 0 {
			t.Errorf("alignedZeros(%d): len %d cap %d at %p", n, len(b), cap(b), &b[0])
		}
	}
}
