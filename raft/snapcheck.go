package raft

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	hraft "github.com/hashicorp/raft"
)

// ErrCorruptSnapshot means that the newest Raft snapshot of a hub
// (DATA/raft/snapshots/ID/meta.json or state.bin) is damaged: missing, cut
// short, not decodable, or its bytes do not match the CRC-64 recorded when
// it was written. The error wrapping it names the file. Such a hub is
// rebuilt from its peers (see docs/operations.md).
var ErrCorruptSnapshot = errors.New("raft snapshot damaged")

// The files of hashicorp/raft's FileSnapshotStore: Dir/snapshots/ID/ with
// ID "term-index-milliseconds"; a snapshot being written is in ID.tmp.
const (
	snapshotsDir = "snapshots"
	snapMetaFile = "meta.json"
	snapState    = "state.bin"
)

// checkSnapshots checks the snapshots of dir before Raft opens them.
//
// hashicorp/raft skips a snapshot whose meta.json it cannot read, and
// checks state.bin's CRC-64 only when it opens one to send or restore. A
// damaged newest snapshot would so go unnoticed at start, and then either
// make Raft fall back to an older snapshot that the compacted log does not
// follow on from (Raft panics when it finds an entry missing), or stop a
// lagging follower from ever catching up (the leader cannot send it). So
// the newest snapshot, by its directory's name, is read whole and checked
// here: a damaged one fails the start, naming the file.
//
// Older snapshots are kept only in case the newest cannot be read, which
// would stop the start anyway; an interrupted deletion of the oldest one
// (hashicorp/raft removes them as new ones are made) leaves a partial
// directory that is not damage. They are checked without reading their
// state, and a damaged one is logged and left alone.
func checkSnapshots(dir string, logger *slog.Logger) error {
	sdir := filepath.Join(dir, snapshotsDir)
	ents, err := os.ReadDir(sdir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	type snap struct {
		name                string
		term, index, millis uint64
	}
	var snaps []snap
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || strings.HasSuffix(name, ".tmp") {
			continue
		}
		term, index, millis, ok := parseSnapshotID(name)
		if !ok {
			logger.Warn("raft snapshot directory with a name hashicorp/raft does not make; not checked", "path", filepath.Join(sdir, name))
			continue
		}
		s := snap{term: term, index: index, millis: millis}
		s.name = name
		snaps = append(snaps, s)
	}
	// Newest first, in the order hashicorp/raft lists them.
	slices.SortFunc(snaps, func(a, b snap) int {
		for _, d := range [][2]uint64{{a.term, b.term}, {a.index, b.index}, {a.millis, b.millis}} {
			if d[0] != d[1] {
				if d[0] > d[1] {
					return -1
				}
				return 1
			}
		}
		return 0
	})
	for i, s := range snaps {
		err := checkSnapshot(filepath.Join(sdir, s.name), i == 0)
		if err == nil {
			continue
		}
		if i == 0 {
			return err
		}
		logger.Warn("an older raft snapshot is damaged or partly deleted; it is not used", "err", err)
	}
	return nil
}

// parseSnapshotID splits a snapshot id as hashicorp/raft makes it,
// "term-index-milliseconds".
func parseSnapshotID(id string) (term, index, millis uint64, ok bool) {
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var n [3]uint64
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return 0, 0, 0, false
		}
		n[i] = v
	}
	return n[0], n[1], n[2], true
}

// checkSnapshot checks the snapshot in path: its meta.json decodes and
// names it, and its state.bin has the recorded size and, when whole is
// set, the recorded CRC-64.
func checkSnapshot(path string, whole bool) error {
	metaPath := filepath.Join(path, snapMetaFile)
	raw, err := os.ReadFile(metaPath)
	if err != nil {
		return fmt.Errorf("raft: snapshot file %s: %w: %w", metaPath, ErrCorruptSnapshot, err)
	}
	var meta struct {
		hraft.SnapshotMeta
		CRC []byte
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return fmt.Errorf("raft: snapshot file %s: %w: %w", metaPath, ErrCorruptSnapshot, err)
	}
	switch {
	case meta.ID != filepath.Base(path):
		err = fmt.Errorf("it names snapshot %q", meta.ID)
	case meta.Version < hraft.SnapshotVersionMin || meta.Version > hraft.SnapshotVersionMax:
		err = fmt.Errorf("snapshot version %d", meta.Version)
	case len(meta.CRC) != 8:
		err = fmt.Errorf("a checksum of %d bytes", len(meta.CRC))
	case meta.Size < 0:
		err = fmt.Errorf("size %d", meta.Size)
	}
	if err != nil {
		return fmt.Errorf("raft: snapshot file %s: %w: %w", metaPath, ErrCorruptSnapshot, err)
	}
	statePath := filepath.Join(path, snapState)
	f, err := os.Open(statePath)
	if err != nil {
		return fmt.Errorf("raft: snapshot file %s: %w: %w", statePath, ErrCorruptSnapshot, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("raft: snapshot file %s: %w", statePath, err)
	}
	if fi.Size() != meta.Size {
		how := "cut short"
		if fi.Size() > meta.Size {
			how = "grown"
		}
		return fmt.Errorf("raft: snapshot file %s: %w: %s: %d bytes, written %d", statePath, ErrCorruptSnapshot, how, fi.Size(), meta.Size)
	}
	if !whole {
		return nil
	}
	// hashicorp/raft's checksum: CRC-64 (ECMA) of state.bin, big-endian.
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("raft: snapshot file %s: %w", statePath, err)
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, meta.CRC) {
		return fmt.Errorf("raft: snapshot file %s: %w: CRC-64 %x, written %x", statePath, ErrCorruptSnapshot, sum, meta.CRC)
	}
	return nil
}

// namedSnapshots is hashicorp/raft's FileSnapshotStore with the file named
// in Open's errors (its own say only "CRC mismatch"), logged as well: a
// leader that cannot open its snapshot cannot bring a lagging follower up
// to date, and says so only in this log.
type namedSnapshots struct {
	*hraft.FileSnapshotStore
	dir    string
	logger *slog.Logger
}

func (s namedSnapshots) Open(id string) (*hraft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.FileSnapshotStore.Open(id)
	if err != nil {
		path := filepath.Join(s.dir, snapshotsDir, id)
		if cerr := checkSnapshot(path, true); cerr != nil {
			err = cerr
		} else {
			err = fmt.Errorf("raft: snapshot %s: %w", path, err)
		}
		s.logger.Error("cannot open the raft snapshot; rebuild this hub from its peers if it is damaged (docs/operations.md)", "err", err)
	}
	return meta, rc, err
}
