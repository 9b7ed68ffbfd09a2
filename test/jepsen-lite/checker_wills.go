package main

import "strings"

// checkWills: a will connection (one client id per connection) that ended
// without DISCONNECT (its node killed or paused, the connection lost) has
// its will published exactly once; one that ended with a normal
// DISCONNECT has none. Every watcher (a persistent QoS 2 subscriber to
// will/#, subscribed before the will's connection began) sees each will
// that is owed once.
func checkWills(ix *index) *Result {
	r := newResult("wills")
	subs := ix.subscribers()
	var watchers []*subscriber
	for _, id := range sortedKeys(subs) {
		if strings.HasPrefix(id, "will-watch") && len(subs[id].Epochs) > 0 {
			watchers = append(watchers, subs[id])
		}
	}
	for _, id := range sortedKeys(ix.byClient) {
		if !strings.HasPrefix(id, "will-n") {
			continue
		}
		var connected int64 = -1
		var node int
		var payload, ending string
		var endAt int64
		for _, op := range ix.byClient[id] {
			switch {
			case op.F == "connect" && op.Type == "ok":
				connected, node, payload = op.Time, op.Node, op.Payload
			case (op.F == "disconnect" || op.F == "conn-lost") && ending == "":
				ending, endAt = op.F, op.Time
			}
		}
		if connected < 0 || ending == "" {
			continue
		}
		want := 0
		if ending == "conn-lost" {
			want = 1
		}
		r.Counts["connections-"+ending]++
		for _, w := range watchers {
			e := w.Epochs[0]
			if e.Start > connected || e.End < ix.end {
				continue // not subscribed for the whole of this will's life
			}
			got := w.Delivered[payload]
			ex := map[string]any{"will": payload, "node": node, "connected": secs(connected), "ended": ending,
				"ended_at": secs(endAt), "watcher": w.ID, "deliveries": got, "faults": ix.activeFaults(connected, endAt)}
			switch {
			case want == 1 && got == 0:
				r.fail("will-lost", ex)
			case want == 1 && got > 1:
				r.fail("will-duplicated", ex)
			case want == 0 && got > 0:
				r.fail("will-after-normal-disconnect", ex)
			default:
				r.Counts["as-expected"]++
			}
		}
	}
	return r
}
