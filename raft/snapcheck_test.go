package raft

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	hraft "github.com/hashicorp/raft"
)

// snapshotDirs returns the snapshot directories of a node, newest first.
func snapshotDirs(t *testing.T, dir string) []string {
	t.Helper()
	fs, err := hraft.NewFileSnapshotStore(dir, 10, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	metas, err := fs.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range metas {
		out = append(out, filepath.Join(dir, snapshotsDir, m.ID))
	}
	return out
}

// saveFiles reads every file under dir, to put them back later.
func saveFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[path] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// putBack makes dir hold exactly the saved files again.
func putBack(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for path, b := range files {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNewRefusesDamagedSnapshot: a hub whose newest Raft snapshot is
// damaged in any way refuses to start, naming the file, instead of
// starting on an older snapshot its compacted log does not follow on from
// or keeping a snapshot it cannot send. Damage to the older snapshot,
// which is not used, is logged and the hub starts. With the files put
// back the hub starts with every message.
func TestNewRefusesDamagedSnapshot(t *testing.T) {
	c := newClusterWith(t, 1, snapshotConfig)
	tn := c.nodes[0]
	snapshotAndTruncate(t, c, "chat", 20)
	for i := 21; i <= 30; i++ {
		c.publish("chat", fmt.Sprintf("chat-%d", i), fmt.Sprintf("chat %d", i))
	}
	if err := tn.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	c.stop(tn)
	snaps := snapshotDirs(t, tn.dir)
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots, want 2", len(snaps))
	}
	newest, older := snaps[0], snaps[1]
	sdir := filepath.Join(tn.dir, snapshotsDir)
	orig := saveFiles(t, sdir)

	meta := filepath.Join(newest, snapMetaFile)
	state := filepath.Join(newest, snapState)
	write := func(path string, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(path string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		file   string
		damage func()
	}{
		{"meta.json missing", meta, func() { remove(meta) }},
		{"meta.json cut in half", meta, func() { write(meta, orig[meta][:len(orig[meta])/2]) }},
		{"meta.json empty", meta, func() { write(meta, nil) }},
		{"meta.json zero-filled", meta, func() { write(meta, make([]byte, len(orig[meta]))) }},
		{"meta.json of the older snapshot", meta, func() { write(meta, orig[filepath.Join(older, snapMetaFile)]) }},
		{"state.bin missing", state, func() { remove(state) }},
		{"state.bin cut in half", state, func() { write(state, orig[state][:len(orig[state])/2]) }},
		{"state.bin one byte longer", state, func() { write(state, append(append([]byte(nil), orig[state]...), 0)) }},
		{"state.bin flipped byte", state, func() { flipByte(t, state, int64(len(orig[state])/3)) }},
		{"state.bin zeroed page", state, func() {
			b := append([]byte(nil), orig[state]...)
			clear(b[4096:8192])
			write(state, b)
		}},
	}
	for _, tc := range cases {
		putBack(t, sdir, orig)
		tc.damage()
		err := c.tryStart(tn, c.peers)
		if err == nil {
			c.stop(tn)
			t.Errorf("%s: the node started", tc.name)
			continue
		}
		if !errors.Is(err, ErrCorruptSnapshot) || !strings.Contains(err.Error(), tc.file) {
			t.Errorf("%s: %v; want ErrCorruptSnapshot naming %s", tc.name, err, tc.file)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
	}

	// The file store names the file too, when a snapshot is damaged after
	// the start (a leader opening it to send to a lagging follower).
	putBack(t, sdir, orig)
	flipByte(t, state, 100)
	fs, err := hraft.NewFileSnapshotStore(tn.dir, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	named := namedSnapshots{FileSnapshotStore: fs, dir: tn.dir, logger: discardLogger()}
	if _, _, err := named.Open(filepath.Base(newest)); !errors.Is(err, ErrCorruptSnapshot) || !strings.Contains(err.Error(), state) {
		t.Errorf("Open of a damaged snapshot: %v; want ErrCorruptSnapshot naming %s", err, state)
	}

	// The older snapshot damaged, or partly deleted: not used, so the node
	// starts.
	for _, name := range []string{snapState, snapMetaFile} {
		putBack(t, sdir, orig)
		flipByte(t, filepath.Join(older, snapState), 10)
		remove(filepath.Join(older, name))
		c.restart(tn)
		c.stop(tn)
	}

	putBack(t, sdir, orig)
	c.restart(tn)
	c.publish("chat", "chat-31", "chat 31")
	checkChannel(t, tn.id, c.waitSame(tn), "chat", chatData(31))
}
