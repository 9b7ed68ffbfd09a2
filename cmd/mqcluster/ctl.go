package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mqcluster/mqcluster/node/admin"
)

const ctlUsage = `Usage: mqcluster ctl [flags] <command> [arguments]

Talks to the admin API of one node (admin.address of mqcluster serve).

Commands:
  status                 the node, its view of Raft and the cluster, its broker's figures
  members                the cluster's members: gossip state, Raft role, addresses
  clients                the clients connected to the node
  sessions               the cluster's persistent sessions (--local: those the node holds)
  subscriptions [client] a client's subscriptions with their options (all the node holds without one)
  leave                  the node drains its clients, hands over their sessions, leaves
                         the cluster for good (Raft and gossip) and exits (scale-down)
  remove <node>          remove another node from the cluster (one that is gone for good)

Flags:
`

// ctl is one `mqcluster ctl` invocation.
type ctl struct {
	base    string
	token   string
	output  string
	limit   int
	after   string
	local   bool
	wait    bool
	timeout time.Duration
	out     io.Writer
	client  *http.Client
}

// ctlMain runs `mqcluster ctl args...`; environ is os.Environ()'s form.
func ctlMain(args, environ []string, out io.Writer) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	c := &ctl{out: out}
	fs := flag.NewFlagSet("mqcluster ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defAdmin := env["MQCLUSTER_ADMIN"]
	if defAdmin == "" {
		defAdmin = "http://127.0.0.1:8081"
	}
	fs.StringVar(&c.base, "admin", defAdmin, "admin API of the node: http://host:port (or MQCLUSTER_ADMIN)")
	tokenFile := fs.String("token-file", env["MQCLUSTER_ADMIN_TOKEN_FILE"], "file holding the admin bearer token (or MQCLUSTER_ADMIN_TOKEN_FILE)")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	fs.IntVar(&c.limit, "limit", admin.DefaultLimit, "largest number of items a list shows")
	fs.StringVar(&c.after, "after", "", "list the items after this one (the cursor a truncated list names)")
	fs.BoolVar(&c.local, "local", false, "sessions: those this node holds, ephemeral ones included")
	fs.BoolVar(&c.wait, "wait", false, "leave: wait until the node has stopped")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "bound on each request (and on leave --wait, ten times this)")
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(out, ctlUsage)
				fs.SetOutput(out)
				fs.PrintDefaults()
				return nil
			}
			return fmt.Errorf("ctl: %w", err)
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		pos, rest = append(pos, rest[0]), rest[1:]
	}
	if len(pos) == 0 {
		return errors.New("ctl: a command is required: status, members, clients, sessions, subscriptions, leave or remove (mqcluster ctl -h)")
	}
	if c.output != "table" && c.output != "json" {
		return fmt.Errorf("ctl: -o %q: want table or json", c.output)
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("ctl: token file: %w", err)
		}
		c.token = string(bytes.TrimSpace(b))
	}
	if !strings.Contains(c.base, "://") {
		c.base = "http://" + c.base
	}
	c.base = strings.TrimRight(c.base, "/")
	c.client = &http.Client{Timeout: c.timeout}
	cmd, rest := pos[0], pos[1:]
	want := map[string]int{"status": 0, "members": 0, "clients": 0, "sessions": 0, "subscriptions": -1, "leave": 0, "remove": 1}
	n, ok := want[cmd]
	switch {
	case !ok:
		return fmt.Errorf("ctl: unknown command %q (mqcluster ctl -h)", cmd)
	case n >= 0 && len(rest) != n, n < 0 && len(rest) > 1:
		return fmt.Errorf("ctl: %s: wrong number of arguments (mqcluster ctl -h)", cmd)
	}
	if err := c.run(cmd, rest); err != nil {
		return fmt.Errorf("ctl %s: %w", cmd, err)
	}
	return nil
}

func (c *ctl) run(cmd string, args []string) error {
	switch cmd {
	case "status":
		var st admin.Status
		if err := c.get("/api/v1/status", nil, &st); err != nil {
			return err
		}
		return c.print(st, func() { printStatus(c.out, &st) })
	case "members":
		var p admin.Page[admin.Member]
		if err := c.get("/api/v1/members", c.page(), &p); err != nil {
			return err
		}
		return c.print(p, func() { printMembers(c.out, p.Items); c.more(p.Total, len(p.Items), p.Next) })
	case "clients":
		var p admin.Page[admin.Client]
		if err := c.get("/api/v1/clients", c.page(), &p); err != nil {
			return err
		}
		return c.print(p, func() { printClients(c.out, p.Items); c.more(p.Total, len(p.Items), p.Next) })
	case "sessions":
		q := c.page()
		if c.local {
			q.Set("local", "true")
		}
		var p admin.Page[admin.Session]
		if err := c.get("/api/v1/sessions", q, &p); err != nil {
			return err
		}
		return c.print(p, func() { printSessions(c.out, p.Items); c.more(p.Total, len(p.Items), p.Next) })
	case "subscriptions":
		q := c.page()
		if len(args) == 1 {
			q.Set("client", args[0])
		}
		var p admin.Page[admin.Subscription]
		if err := c.get("/api/v1/subscriptions", q, &p); err != nil {
			return err
		}
		return c.print(p, func() { printSubscriptions(c.out, p.Items); c.more(p.Total, len(p.Items), p.Next) })
	case "leave":
		return c.leave()
	case "remove":
		var a admin.Accepted
		if err := c.do(http.MethodDelete, "/api/v1/members/"+url.PathEscape(args[0]), nil, &a); err != nil {
			return err
		}
		return c.print(a, func() { fmt.Fprintf(c.out, "node %s removed from the cluster\n", a.NodeID) })
	}
	return nil
}

// leave asks the node to leave and, with --wait, waits until it stopped
// answering.
func (c *ctl) leave() error {
	var a admin.Accepted
	if err := c.do(http.MethodPost, "/api/v1/leave", nil, &a); err != nil {
		return err
	}
	if err := c.print(a, func() {
		fmt.Fprintf(c.out, "node %s is leaving the cluster: it drains its clients, hands their sessions over, leaves Raft and gossip, and exits\n", a.NodeID)
	}); err != nil {
		return err
	}
	if !c.wait {
		return nil
	}
	deadline := time.Now().Add(10 * c.timeout)
	for time.Now().Before(deadline) {
		resp, err := c.client.Get(c.base + "/healthz")
		if err == nil {
			resp.Body.Close()
		} else {
			if c.output == "table" {
				fmt.Fprintf(c.out, "node %s has stopped\n", a.NodeID)
			}
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("node %s still answers after %v", a.NodeID, 10*c.timeout)
}

func (c *ctl) page() url.Values {
	q := url.Values{"limit": {strconv.Itoa(c.limit)}}
	if c.after != "" {
		q.Set("after", c.after)
	}
	return q
}

// more notes a truncated list under the table.
func (c *ctl) more(total, shown int, next string) {
	if next != "" {
		fmt.Fprintf(c.out, "(%d of %d shown; the next ones: --after %q)\n", shown, total, next)
	}
}

// print writes v as JSON with -o json, else calls table.
func (c *ctl) print(v any, table func()) error {
	if c.output == "json" {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	table()
	return nil
}

func (c *ctl) get(path string, q url.Values, v any) error {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.do(http.MethodGet, path, nil, v)
}

// do makes one request and decodes the answer into v, or turns an error
// answer into an error that says what the node said.
func (c *ctl) do(method, path string, body io.Reader, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is the node's admin.address %s?)", err, c.base)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e admin.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
		}
		if e.Leader != "" {
			return fmt.Errorf("%s: %s (the leader is %s: ask its admin endpoint)", resp.Status, e.Error, e.Leader)
		}
		return fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("answer of %s: %w", c.base+path, err)
	}
	return nil
}
