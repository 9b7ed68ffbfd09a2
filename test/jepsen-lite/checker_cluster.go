package main

import (
	"bufio"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var electionRE = regexp.MustCompile(`election won: term=(\d+)`)

// checkLeaders: at most one node wins an election per Raft term (from
// hashicorp/raft's "election won" line in every node's log).
func checkLeaders(logs map[string]string) *Result {
	r := newResult("split-brain-leaders")
	winners := map[int][]string{}
	for _, node := range sortedKeys(logs) {
		scanLog(logs[node], func(line string) {
			if m := electionRE.FindStringSubmatch(line); m != nil {
				term, _ := strconv.Atoi(m[1])
				winners[term] = append(winners[term], node)
			}
		})
	}
	terms := make([]int, 0, len(winners))
	for t := range winners {
		terms = append(terms, t)
	}
	sort.Ints(terms)
	for _, t := range terms {
		r.Counts["elections"]++
		if len(winners[t]) > 1 {
			r.fail("two-leaders", map[string]any{"term": t, "leaders": winners[t]})
		}
	}
	return r
}

// ownerWindow is how long an old connection may keep acting after a
// connection with the same client id was accepted elsewhere.
const ownerWindow = int64(5e9)

// checkOwners: one owner per client id. After a connection with a client
// id is accepted (CONNACK), an earlier connection with that id receives
// nothing more once ownerWindow has passed; old connections still open
// after the window are counted.
func checkOwners(ix *index) *Result {
	r := newResult("split-brain-owners")
	for _, id := range sortedKeys(ix.byClient) {
		if !strings.HasPrefix(id, "hop") || strings.HasSuffix(id, "-pub") {
			continue
		}
		type conn struct {
			node        int
			ok, end     int64
			lastDeliver int64
			deliveries  []Op
		}
		conns := map[int]*conn{}
		var order []int
		for _, op := range ix.byClient[id] {
			switch {
			case op.F == "connect" && op.Type == "ok":
				conns[op.Conn] = &conn{node: op.Node, ok: op.Time, end: forever}
				order = append(order, op.Conn)
			case op.F == "conn-lost" || op.F == "abort" || op.F == "disconnect":
				if c := conns[op.Conn]; c != nil {
					c.end = min(c.end, op.Time)
				}
			case op.F == "deliver":
				if c := conns[op.Conn]; c != nil {
					c.deliveries = append(c.deliveries, op)
				}
			}
		}
		for i := 1; i < len(order); i++ {
			newer := conns[order[i]]
			for _, k := range order[:i] {
				old := conns[k]
				if old.ok > newer.ok || old.end < newer.ok {
					continue
				}
				r.Counts["takeovers"]++
				if old.end > newer.ok+ownerWindow {
					r.note("old-connection-open", map[string]any{"client": id, "old_conn": k, "old_node": old.node,
						"new_conn": order[i], "new_node": newer.node, "new_connack": secs(newer.ok),
						"old_closed": secsOrNever(old.end), "faults": ix.activeFaults(newer.ok, newer.ok+ownerWindow)})
				}
				for _, d := range old.deliveries {
					if d.Time > newer.ok+ownerWindow && d.Time < newer.end {
						r.fail("two-owners", map[string]any{"client": id, "old_conn": k, "old_node": old.node,
							"new_conn": order[i], "new_node": newer.node, "new_connack": secs(newer.ok),
							"old_delivery": d.Payload, "delivered_at": secs(d.Time),
							"faults": ix.activeFaults(newer.ok, d.Time)})
						break
					}
				}
			}
		}
	}
	return r
}

func secsOrNever(t int64) string {
	if t == forever {
		return "never"
	}
	return secs(t)
}

// checkLiveness: within 10 s of the heal every node accepts a connect and
// a subscribe, and delivers a publish made on another node.
func checkLiveness(ix *index, healed int64) *Result {
	r := newResult("liveness")
	first := map[int]int64{}
	for _, op := range ix.ops {
		if op.F == "probe" && op.Workload == "liveness" && op.Type == "ok" {
			if _, ok := first[op.Node]; !ok {
				first[op.Node] = op.Time
			}
		}
	}
	for n := 0; n < ix.nodes; n++ {
		t, ok := first[n]
		switch {
		case !ok:
			r.fail("never-recovered", map[string]any{"node": n})
		case t-healed > 10e9:
			r.fail("slow-recovery", map[string]any{"node": n, "recovered_after": secs(t - healed)})
		default:
			r.Counts["recovered"]++
		}
	}
	return r
}

var crashRE = regexp.MustCompile(`panic:|fatal error:|WARNING: DATA RACE|goroutine \d+ \[running\]`)

// checkCrashes: no panic, fatal error or data race in any node log, and no
// node process ended without the nemesis ending it.
func checkCrashes(ix *index, logs map[string]string) *Result {
	r := newResult("crashes")
	for _, node := range sortedKeys(logs) {
		scanLog(logs[node], func(line string) {
			if crashRE.MatchString(line) {
				if len(line) > 300 {
					line = line[:300]
				}
				r.fail("panic", map[string]any{"node": node, "line": line})
			}
		})
	}
	for _, op := range ix.ops {
		if op.F == "node-exit" {
			r.fail("unexpected-exit", map[string]any{"node": op.Node, "at": secs(op.Time), "error": op.Error})
		}
	}
	return r
}

// scanLog calls f with every line of a log file.
func scanLog(path string, f func(string)) {
	fh, err := os.Open(path)
	if err != nil {
		return
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		f(sc.Text())
	}
}
