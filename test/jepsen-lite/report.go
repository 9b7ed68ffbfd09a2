package main

import (
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// RunMeta describes a run in its report.
type RunMeta struct {
	Seed     int64    `json:"seed"`
	Nodes    int      `json:"nodes"`
	Time     string   `json:"time"`
	Families []string `json:"families"`
	Command  string   `json:"command"`
	Schedule []Fault  `json:"schedule"`
	Notes    []string `json:"notes,omitempty"`
	Dir      string   `json:"dir"`
}

// WriteReport writes results.json, summary.txt and timeline.html into dir,
// prints the summary, and returns whether every checker passed.
func WriteReport(dir string, meta RunMeta, res []*Result, ops []Op) (bool, error) {
	valid := true
	for _, r := range res {
		valid = valid && r.Valid
	}
	out := map[string]any{"valid": valid, "run": meta, "checkers": res, "stats": stats(ops)}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return false, err
	}
	sum := summary(meta, res, valid)
	fmt.Print(sum)
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(sum), 0o644); err != nil {
		return false, err
	}
	return valid, os.WriteFile(filepath.Join(dir, "timeline.html"), []byte(timeline(meta, res, ops)), 0o644)
}

// stats counts operations by function and outcome.
func stats(ops []Op) map[string]int {
	s := map[string]int{}
	for _, op := range ops {
		if op.Type != "invoke" {
			s[op.F+":"+op.Type]++
		}
	}
	return s
}

func summary(meta RunMeta, res []*Result, valid bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "jepsen-lite  seed %d  %d nodes  faults %s over %s\n", meta.Seed, meta.Nodes, strings.Join(meta.Families, ","), meta.Time)
	fmt.Fprintf(&b, "replay: %s --seed %d\n", strings.Split(meta.Command+" ", " --seed")[0], meta.Seed)
	for _, r := range res {
		verdict := "PASS"
		if !r.Valid {
			verdict = "FAIL"
		}
		keys := make([]string, 0, len(r.Counts))
		for k := range r.Counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var counts []string
		for _, k := range keys {
			counts = append(counts, fmt.Sprintf("%s=%d", k, r.Counts[k]))
		}
		fmt.Fprintf(&b, "  %-4s %-20s %s\n", verdict, r.Name, strings.Join(counts, " "))
	}
	for _, n := range meta.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	verdict := "PASS"
	if !valid {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "%s  (%s)\n", verdict, meta.Dir)
	return b.String()
}

// timeline draws the run as SVG in an HTML page: fault bands, node
// events, publish latencies (log scale), failed and unknown operations,
// and the anomalies the checkers found, at their time.
func timeline(meta RunMeta, res []*Result, ops []Op) string {
	const w, h, left, top, plotH = 1400.0, 560.0, 60.0, 40.0, 360.0
	var end int64 = 1
	for _, op := range ops {
		end = max(end, op.Time)
	}
	x := func(t int64) float64 { return left + (w-left-20)*float64(t)/float64(end) }
	y := func(lat int64) float64 { // 1 ms .. 30 s, log
		l := math.Log10(math.Max(float64(lat)/1e6, 1))
		return top + plotH - plotH*l/math.Log10(30000)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<!doctype html><meta charset=utf-8><title>jepsen-lite %d</title><body style='font-family:sans-serif'>", meta.Seed)
	fmt.Fprintf(&b, "<h3>jepsen-lite seed %d, %d nodes, %s</h3>", meta.Seed, meta.Nodes, html.EscapeString(meta.Command))
	fmt.Fprintf(&b, "<svg width='%.0f' height='%.0f' style='border:1px solid #ccc'>", w, h)
	// Fault bands.
	colors := map[string]string{"partition": "#f8c0c0", "kill": "#c0c0f8", "pause": "#f8e0a0", "slow": "#c0f0c0", "membership": "#e0c0f0"}
	for _, s := range faultSpans(ops, end) {
		fam := strings.SplitN(s.Kind, "/", 2)[0]
		fmt.Fprintf(&b, "<rect x='%.1f' y='%.0f' width='%.1f' height='%.0f' fill='%s' opacity='0.6'><title>%s %s-%s</title></rect>",
			x(s.Start), top, math.Max(x(s.End)-x(s.Start), 1), plotH, colors[fam], html.EscapeString(s.Kind), secs(s.Start), secs(s.End))
		fmt.Fprintf(&b, "<text x='%.1f' y='%.0f' font-size='10'>%s</text>", x(s.Start)+2, top-4, html.EscapeString(s.Kind))
	}
	// Latency axis.
	for _, ms := range []int64{1, 10, 100, 1000, 10000} {
		fmt.Fprintf(&b, "<line x1='%.0f' x2='%.0f' y1='%.1f' y2='%.1f' stroke='#ddd'/><text x='4' y='%.1f' font-size='10'>%dms</text>",
			left, w-20, y(ms*1e6), y(ms*1e6), y(ms*1e6)+3, ms)
	}
	inv := map[int64]int64{}
	for _, op := range ops {
		switch {
		case op.Type == "invoke":
			inv[op.ID] = op.Time
		case op.F == "publish" || op.F == "subscribe" || op.F == "connect" || op.F == "read":
			color := map[string]string{"ok": "#3070c0", "fail": "#e08000", "info": "#c00000"}[op.Type]
			lat := op.Time - inv[op.ID]
			fmt.Fprintf(&b, "<circle cx='%.1f' cy='%.1f' r='1.3' fill='%s' opacity='0.5'/>", x(inv[op.ID]), y(lat), color)
		case op.F == "node-start" || op.F == "node-exit":
			fmt.Fprintf(&b, "<text x='%.1f' y='%.0f' font-size='10' fill='#006'>%s n%d</text>", x(op.Time), top+plotH+14+float64(op.Node)*12, op.F, op.Node)
		case op.F == "heal":
			fmt.Fprintf(&b, "<line x1='%.1f' x2='%.1f' y1='%.0f' y2='%.0f' stroke='green' stroke-width='2'/><text x='%.1f' y='%.0f' font-size='10' fill='green'>heal</text>",
				x(op.Time), x(op.Time), top, top+plotH, x(op.Time)+2, top+12)
		}
	}
	// Anomalies: red marks along the bottom, at the time of their example.
	row := 0.0
	for _, r := range res {
		if r.Valid {
			continue
		}
		for _, ex := range r.Examples {
			t := exampleTime(ex)
			if t < 0 {
				continue
			}
			fmt.Fprintf(&b, "<path d='M%.1f %.0f l-5 9 h10 z' fill='red'><title>%s %s</title></path>",
				x(t), h-40+math.Mod(row, 3)*10, html.EscapeString(r.Name), html.EscapeString(fmt.Sprint(ex)))
			row++
		}
	}
	fmt.Fprintf(&b, "<text x='%.0f' y='%.0f' font-size='11'>time → (%s); dots: operation latency by invocation time (blue ok, orange fail, red unknown); red triangles: anomalies</text>",
		left, h-6, secs(end))
	b.WriteString("</svg><pre>")
	b.WriteString(html.EscapeString(summary(meta, res, allValid(res))))
	b.WriteString("</pre></body>")
	return b.String()
}

func allValid(res []*Result) bool {
	for _, r := range res {
		if !r.Valid {
			return false
		}
	}
	return true
}

// exampleTime finds the time an example names (acked, at, delivered_at...).
func exampleTime(ex any) int64 {
	m, ok := ex.(map[string]any)
	if !ok {
		return -1
	}
	for _, k := range []string{"acked", "at", "delivered_at", "probe_acked", "ended_at", "new_connack"} {
		if s, ok := m[k].(string); ok {
			var f float64
			if _, err := fmt.Sscanf(s, "%fs", &f); err == nil {
				return int64(f * 1e9)
			}
		}
	}
	return -1
}
