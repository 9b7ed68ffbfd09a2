//go:build cpuprofile

package main

// Built with -tags cpuprofile, a process with MQCLUSTER_CPUPROFILE_DIR set
// writes its CPU profile to that directory (cpu-PID.pprof) for
// MQCLUSTER_CPUPROFILE_SECONDS (default 10): for profiling the nodes
// `mqcluster bench --cluster` starts.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"time"
)

func init() {
	dir := os.Getenv("MQCLUSTER_CPUPROFILE_DIR")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", os.Getpid())))
	if err != nil {
		return
	}
	if pprof.StartCPUProfile(f) != nil {
		f.Close()
		return
	}
	secs, err := strconv.Atoi(os.Getenv("MQCLUSTER_CPUPROFILE_SECONDS"))
	if err != nil || secs <= 0 {
		secs = 10
	}
	time.AfterFunc(time.Duration(secs)*time.Second, func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}
