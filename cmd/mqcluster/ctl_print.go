package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mqcluster/mqcluster/node/admin"
)

// The tables of `mqcluster ctl`: one row per item, columns aligned, "-"
// for what is empty.

func table(w io.Writer, header string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		for i, v := range r {
			if v == "" {
				r[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func printStatus(w io.Writer, st *admin.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Node:\t%s (version %s, up %s)\n", st.NodeID, st.Version, time.Since(st.StartedAt).Round(time.Second))
	ready := "yes"
	if !st.Ready.Ready {
		ready = "no: " + strings.Join(st.Ready.Failed, ", ")
	}
	fmt.Fprintf(tw, "Ready:\t%s\n", ready)
	if r := st.Raft; r != nil {
		leader := r.LeaderID
		if leader == "" {
			leader = "none known"
		}
		fmt.Fprintf(tw, "Raft:\t%s, term %d, leader %s\n", r.State, r.Term, leader)
		fmt.Fprintf(tw, "Log:\tcommit %d, applied %d, last %d\n", r.CommitIndex, r.AppliedIndex, r.LastLogIndex)
		if r.LastContact != nil {
			fmt.Fprintf(tw, "Leader heard:\t%s\n", ago(*r.LastContact))
		}
	} else {
		fmt.Fprintf(tw, "Cluster:\tnone (a broker alone)\n")
	}
	b := st.Broker
	state := "accepting connections"
	switch {
	case b.Draining:
		state = "draining"
	case !b.Accepting:
		state = "not accepting connections"
	}
	fmt.Fprintf(tw, "Broker:\t%s\n", state)
	fmt.Fprintf(tw, "Clients:\t%d connected; %d sessions (%d offline)\n", b.Connections, b.Sessions, b.Offline)
	fmt.Fprintf(tw, "Subscriptions:\t%d; %d retained messages\n", b.Subscriptions, b.Retained)
	fmt.Fprintf(tw, "Messages:\t%d in, %d out, %d dropped; %d queued, %d in flight\n", b.MessagesIn, b.MessagesOut, b.Dropped, b.Queued, b.Inflight)
	tw.Flush()
	for _, c := range st.Ready.Checks {
		if !c.OK {
			fmt.Fprintf(w, "  not ready: %s: %s\n", c.Name, c.Detail)
		}
	}
	if len(st.Members) > 0 {
		fmt.Fprintln(w)
		printMembers(w, st.Members)
	}
}

func printMembers(w io.Writer, ms []admin.Member) {
	rows := make([][]string, 0, len(ms))
	for _, m := range ms {
		id := m.ID
		if m.Self {
			id += " (this node)"
		}
		leader := ""
		if m.Leader {
			leader = "leader"
		}
		rows = append(rows, []string{id, m.Gossip, m.Raft, leader, m.Recorded, m.GossipAddr, m.RaftAddr, m.GRPCAddr})
	}
	table(w, "NODE\tGOSSIP\tRAFT\tROLE\tRECORDED\tGOSSIP ADDR\tRAFT ADDR\tGRPC ADDR", rows)
}

func printClients(w io.Writer, cs []admin.Client) {
	rows := make([][]string, 0, len(cs))
	for _, c := range cs {
		rows = append(rows, []string{c.ClientID, c.Protocol, c.Remote, c.Username, strconv.Itoa(c.KeepAliveSeconds) + "s",
			c.ConnectedAt.Local().Format(time.DateTime), yesNo(c.Persistent), strconv.Itoa(c.Subscriptions),
			strconv.Itoa(c.Queued), strconv.Itoa(c.Inflight)})
	}
	table(w, "CLIENT ID\tPROTOCOL\tREMOTE\tUSERNAME\tKEEP ALIVE\tCONNECTED SINCE\tPERSISTENT\tSUBS\tQUEUED\tIN FLIGHT", rows)
}

func printSessions(w io.Writer, ss []admin.Session) {
	rows := make([][]string, 0, len(ss))
	for _, s := range ss {
		expiry := "never"
		if s.ExpirySeconds != nil {
			expiry = strconv.FormatUint(uint64(*s.ExpirySeconds), 10) + "s"
		}
		if s.ExpiresAt != nil {
			expiry += " (ends " + s.ExpiresAt.Local().Format(time.DateTime) + ")"
		}
		queued := ""
		if s.Queued != nil {
			queued = strconv.Itoa(*s.Queued)
		}
		epoch := ""
		if s.Epoch != 0 {
			epoch = strconv.FormatUint(s.Epoch, 10)
		}
		rows = append(rows, []string{s.ClientID, s.Owner, yesNo(s.Connected), epoch, expiry, strconv.Itoa(s.Subscriptions), queued})
	}
	table(w, "CLIENT ID\tOWNER\tCONNECTED\tEPOCH\tEXPIRY\tSUBS\tQUEUED", rows)
}

func printSubscriptions(w io.Writer, subs []admin.Subscription) {
	rows := make([][]string, 0, len(subs))
	for _, s := range subs {
		var opts []string
		if s.NoLocal {
			opts = append(opts, "no-local")
		}
		if s.RetainAsPublished {
			opts = append(opts, "retain-as-published")
		}
		if s.RetainHandling != 0 {
			opts = append(opts, "retain-handling="+strconv.Itoa(int(s.RetainHandling)))
		}
		if s.SubscriptionID != 0 {
			opts = append(opts, "id="+strconv.FormatUint(uint64(s.SubscriptionID), 10))
		}
		rows = append(rows, []string{s.ClientID, s.Filter, strconv.Itoa(int(s.QoS)), strings.Join(opts, ","), s.Source})
	}
	table(w, "CLIENT ID\tFILTER\tQOS\tOPTIONS\tSOURCE", rows)
}
