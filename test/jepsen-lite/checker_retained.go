package main

import (
	"fmt"
	"sort"
	"strings"
)

// checkRetained:
//   - convergence: the two final reads of every node (after the heal) all
//     return the same retained value for every topic;
//   - that value is the last acknowledged write (a delete: no value), or
//     a later write whose outcome is unknown;
//   - no going back: on one run of one node, a read never returns a value
//     older than one an earlier read returned (a deleted value does not
//     come back);
//   - no minority acknowledgement: a retained write is not acknowledged by
//     a node cut from the majority for the whole time it took.
func checkRetained(ix *index) *Result {
	r := newResult("retained")
	// Writes per topic in the order their one writer made them.
	writes := map[string][]*pubOp{}
	version := map[string]int{} // payload -> position among its topic's writes
	for _, p := range ix.pubList {
		if p.Retain && p.Workload == "retained" {
			writes[p.Topic] = append(writes[p.Topic], p)
			if p.Payload != "" {
				version[p.Payload] = len(writes[p.Topic])
			}
			if p.acked() && ix.inMinority(p.Node, p.Invoke, p.Done) {
				r.fail("minority-ack", map[string]any{"topic": p.Topic, "payload": p.Payload, "node": p.Node,
					"invoked": secs(p.Invoke), "acked": secs(p.Done)})
			}
		}
	}
	for t := range writes {
		sort.Slice(writes[t], func(i, j int) bool { return writes[t][i].Invoke < writes[t][j].Invoke })
		for i, p := range writes[t] {
			if p.Payload != "" {
				version[p.Payload] = i + 1
			}
		}
	}

	// Reads, per node run.
	run := map[int]int{}
	type seen struct {
		v       int
		payload string
		at      int64
	}
	maxSeen := map[string]seen{} // node/run/topic -> newest value seen
	final := map[int]map[int]map[string]string{}
	for _, op := range ix.ops {
		if op.F == "node-start" {
			run[op.Node]++
			continue
		}
		if op.F != "read" || op.Type == "invoke" {
			continue
		}
		if strings.HasPrefix(op.Client, "retained-final") {
			round := 0
			fmt.Sscanf(strings.TrimPrefix(op.Client, "retained-final"), "%d", &round)
			if final[round] == nil {
				final[round] = map[int]map[string]string{}
			}
			if op.Type == "ok" {
				final[round][op.Node] = op.Values
			} else {
				r.note("final-read-failed", map[string]any{"node": op.Node, "round": round, "error": op.Error})
			}
		}
		if op.Type != "ok" {
			continue
		}
		r.Counts["reads"]++
		inv := ix.invokeTime(op)
		for topic, payload := range op.Values {
			v := version[payload]
			key := fmt.Sprintf("%d/%d/%s", op.Node, run[op.Node], topic)
			if s, ok := maxSeen[key]; ok && v < s.v && s.at < inv {
				r.fail("went-back", map[string]any{"node": op.Node, "topic": topic, "read": payload, "at": secs(op.Time),
					"earlier_read": s.payload, "earlier_at": secs(s.at)})
			}
			if v > maxSeen[key].v {
				maxSeen[key] = seen{v, payload, op.Time}
			}
		}
	}

	if len(writes) == 0 && len(final) == 0 {
		r.Notes = append(r.Notes, "the retained workload did not run")
		return r
	}
	// Convergence and the final value: every node answered both rounds.
	for round := 0; round < 2; round++ {
		for node := 0; node < ix.nodes; node++ {
			if _, ok := final[round][node]; !ok {
				r.fail("final-read-missing", map[string]any{"node": node, "round": round})
			}
		}
	}
	last := final[1]
	for topic, ws := range writes {
		allowed := map[string]bool{}
		lastOK := -1
		for i, p := range ws {
			if p.acked() {
				lastOK = i
			}
		}
		if lastOK >= 0 {
			allowed[ws[lastOK].Payload] = true
		} else {
			allowed[""] = true
		}
		for _, p := range ws[lastOK+1:] {
			if p.Outcome == "info" {
				allowed[p.Payload] = true
			}
		}
		values := map[string][]int{}
		for node := 0; node < ix.nodes; node++ {
			if vals, ok := last[node]; ok {
				values[vals[topic]] = append(values[vals[topic]], node)
				if prev, ok := final[0][node]; ok && prev[topic] != vals[topic] {
					r.fail("unstable", map[string]any{"topic": topic, "node": node, "first": prev[topic], "then": vals[topic]})
				}
			}
		}
		if len(values) > 1 {
			r.fail("diverged", map[string]any{"topic": topic, "values_by_node": values})
		}
		for v, nodes := range values {
			if !allowed[v] {
				kind := "wrong-final-value"
				if lastOK >= 0 && ws[lastOK].Payload == "" {
					kind = "resurrected"
				}
				r.fail(kind, map[string]any{"topic": topic, "value": v, "nodes": nodes, "allowed": sortedKeys(allowed)})
			}
		}
		r.Counts["topics"]++
	}
	return r
}
