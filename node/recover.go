package node

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/mqcluster/mqcluster/fsm"
)

// recoverFromPeersJSON is hashicorp/raft's manual recovery from the loss of
// a quorum: when data-dir/raft/peers.json exists, the node rewrites its
// Raft configuration to the servers listed there (with the log and
// snapshots it has) before it starts, and renames the file to
// peers.json.applied so that it is used once. Every surviving server gets
// the same file, then all are started. The format is raft's version 3:
//
//	[{"id": "mqcluster-0", "address": "10.0.0.5:7000", "non_voter": false}]
func (n *Node) recoverFromPeersJSON(rc *raft.Config, dir string, store *raftboltdb.BoltStore,
	snaps raft.SnapshotStore, trans raft.Transport) error {
	path := filepath.Join(dir, "peers.json")
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return nil
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return fmt.Errorf("recovery from %s: %w", path, err)
	}
	// RecoverCluster replays the log into a state machine of its own.
	scratch, err := fsm.New(fsm.Config{Logger: n.log})
	if err != nil {
		return err
	}
	if err := raft.RecoverCluster(rc, scratch, store, store, snaps, trans, conf); err != nil {
		return fmt.Errorf("recovery from %s: %w", path, err)
	}
	if err := os.Rename(path, path+".applied"); err != nil {
		return fmt.Errorf("recovery from %s: %w", path, err)
	}
	n.log.Warn("raft configuration recovered from peers.json", "servers", len(conf.Servers))
	return nil
}
