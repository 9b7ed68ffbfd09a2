package main

import "strings"

// checkSubs, over the subs workload:
//   - after its SUBACK a subscription is in force on every node that can
//     reach the subscriber's node: a probe published there, acknowledged
//     before the UNSUBSCRIBE was sent, reaches the subscriber, as long as
//     the two nodes stayed connected and up from the SUBSCRIBE on and the
//     subscriber's connection stayed open;
//   - after its UNSUBACK nothing published later reaches it.
func checkSubs(ix *index) *Result {
	r := newResult("subs")
	for id, ops := range ix.byClient {
		if !strings.HasPrefix(id, "subs-w") || strings.Contains(id, "-in-") || strings.Contains(id, "-out-") {
			continue
		}
		var subNode = -1
		var subInvoke, subOK, unsubInvoke, unsubOK, connEnd int64 = 0, 0, forever, forever, forever
		delivered := map[string]int64{}
		for _, op := range ops {
			switch {
			case op.F == "connect" && op.Type == "ok":
				subNode = op.Node
			case op.F == "subscribe" && op.Type == "ok" && op.Reason != nil && *op.Reason < 0x80:
				subInvoke, subOK = ix.invokeTime(op), op.Time
			case op.F == "unsubscribe" && op.Type == "ok":
				unsubInvoke, unsubOK = ix.invokeTime(op), op.Time
			case op.F == "conn-lost" || op.F == "disconnect" || op.F == "abort":
				connEnd = min(connEnd, op.Time)
			case op.F == "deliver":
				if _, ok := delivered[op.Payload]; !ok {
					delivered[op.Payload] = op.Time
				}
			}
		}
		if subOK == 0 {
			continue
		}
		for _, p := range ix.pubList {
			if p.Topic == "" || !strings.HasPrefix(p.Client, id+"-") {
				continue
			}
			in := strings.HasPrefix(p.Client, id+"-in-")
			switch {
			case in && p.acked() && p.Invoke > subOK && p.Done < unsubInvoke && connEnd >= unsubInvoke:
				if !ix.connected(p.Node, subNode, subInvoke, p.Done) {
					r.note("probe-across-fault", nil)
					if _, ok := delivered[p.Payload]; !ok {
						r.note("missed-across-fault", map[string]any{"probe": p.Payload, "subscriber": id,
							"subscriber_node": subNode, "ingress_node": p.Node, "faults": ix.activeFaults(subInvoke, p.Done)})
					}
					continue
				}
				r.Counts["required"]++
				if _, ok := delivered[p.Payload]; !ok {
					r.fail("missed-after-suback", map[string]any{"probe": p.Payload, "subscriber": id, "subscriber_node": subNode,
						"suback": secs(subOK), "ingress_node": p.Node, "probe_acked": secs(p.Done), "reason": p.Reason,
						"faults": ix.activeFaults(subInvoke, p.Done+3e9)})
				}
			case !in && unsubOK < forever && p.Invoke > unsubOK:
				r.Counts["after-unsuback"]++
				if t, ok := delivered[p.Payload]; ok {
					r.fail("delivered-after-unsuback", map[string]any{"probe": p.Payload, "subscriber": id, "subscriber_node": subNode,
						"unsuback": secs(unsubOK), "ingress_node": p.Node, "delivered": secs(t)})
				}
			}
		}
	}
	return r
}
