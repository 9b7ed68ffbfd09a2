package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// cpuSample is the CPU time a process has used so far, read two ways.
type cpuSample struct {
	sched time.Duration // sum over live threads of /proc/PID/task/*/schedstat: exact, in ns
	ticks time.Duration // utime+stime of /proc/PID/stat: whole process, in clock ticks
}

// cpuUsed returns the CPU time used between two samples. The per-thread
// schedstat sum is exact but loses the share of a thread that exited in
// between; /proc/PID/stat keeps it but counts in 10 ms ticks. The schedstat
// figure is used unless the tick count says more than two ticks more was
// used.
func cpuUsed(before, after cpuSample) time.Duration {
	s := after.sched - before.sched
	t := after.ticks - before.ticks
	if t > s+2*clockTick {
		return t
	}
	return s
}

// readCPU samples the CPU time used by process pid so far.
func readCPU(pid int) (cpuSample, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return cpuSample{}, err
	}
	var ns int64
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := bytes.Fields(b)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return cpuSample{}, fmt.Errorf("%s/%s/schedstat: %w", dir, e.Name(), err)
		}
		ns += v
	}
	ticks, err := statTicks(pid)
	if err != nil {
		return cpuSample{}, err
	}
	return cpuSample{sched: time.Duration(ns), ticks: ticks}, nil
}

// clockTick is sysconf(_SC_CLK_TCK), which is 100 on every Linux ABI Go
// supports.
const clockTick = 10 * time.Millisecond

// statTicks returns utime+stime of /proc/PID/stat.
func statTicks(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: the fields of interest follow the
	// last ')'. After it, field 3 (state) is index 0, so utime (14) is 11.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// rss returns the resident set size of pid (VmRSS of /proc/PID/status).
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		v, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("/proc/%d/status: VmRSS %q", pid, v)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, err
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// selfCPU returns the CPU time (user + system) of this process so far: the
// load generator's own cost, reported next to the broker's.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns the
// new soft limit. It uses syscall.Setrlimit so that the brokers started
// afterwards inherit the raised limit (the Go runtime otherwise restores the
// original soft limit in child processes).
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

// loadAvg returns the first three fields of /proc/loadavg, to show in the
// report how busy the machine was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return "?"
	}
	return string(bytes.Join(f[:3], []byte{' '}))
}
