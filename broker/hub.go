package broker

import (
	"errors"
	"path/filepath"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
)

// Hub is one hub assembled: its channel log, Raft node, commit stream and
// Service. OpenHub builds it; Close takes it down in reverse order.
type Hub struct {
	Log     *log.Log
	Node    *raft.Node
	Stream  *Stream
	Service *Service
}

// OpenHub opens a hub with its data in dir: the channel log in
// dir/channels.db (with log.Config.DeferSync: the Raft log is the durable
// copy) and Raft in dir/raft. rc and sc are completed with what OpenHub
// builds (rc.Dir, Log, Observer; sc.Node, Stream). The caller runs
// Service.Run and serves Service.Handler.
func OpenHub(dir string, rc raft.Config, sc Config) (*Hub, error) {
	h := &Hub{Stream: NewStream(0, 0)}
	var err error
	h.Log, err = log.Open(log.Config{Path: filepath.Join(dir, "channels.db"), DeferSync: true, Logger: rc.Logger})
	if err != nil {
		return nil, err
	}
	rc.Dir, rc.Log, rc.Observer = filepath.Join(dir, "raft"), h.Log, h.Stream
	h.Node, err = raft.New(rc)
	if err != nil {
		h.Log.Close()
		return nil, err
	}
	sc.Node, sc.Stream = h.Node, h.Stream
	h.Service, err = New(sc)
	if err != nil {
		h.Node.Close()
		h.Log.Close()
		return nil, err
	}
	return h, nil
}

// Close closes the service, then Raft, then the log.
func (h *Hub) Close() error {
	return errors.Join(h.Service.Close(), h.Node.Close(), h.Log.Close())
}
