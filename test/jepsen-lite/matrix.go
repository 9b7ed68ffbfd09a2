package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// runMatrix runs one run per fault family (the partition run cycles
// through every partition shape), then one with every family, each for
// cfg.Time, and writes matrix.json beside the runs. Exit status 1 when any
// run failed.
func runMatrix(cfg Config) int {
	type entry struct {
		Faults string `json:"faults"`
		Seed   int64  `json:"seed"`
		Valid  bool   `json:"valid"`
		Dir    string `json:"dir"`
		Error  string `json:"error,omitempty"`
	}
	var runs [][]string
	for _, f := range cfg.Families {
		runs = append(runs, []string{f})
	}
	runs = append(runs, cfg.Families)
	var entries []entry
	status := 0
	for i, fams := range runs {
		c := cfg
		c.Families = fams
		c.Matrix = false
		c.Seed = cfg.Seed + int64(i)
		c.Args = replaceFlag(cfg.Args, fams, c.Seed)
		fmt.Fprintf(os.Stderr, "matrix: %s for %v (seed %d)\n", strings.Join(fams, ","), c.Time, c.Seed)
		ok, dir, err := runOnce(c)
		e := entry{Faults: strings.Join(fams, ","), Seed: c.Seed, Valid: ok && err == nil, Dir: dir}
		if err != nil {
			e.Error = err.Error()
		}
		if !e.Valid {
			status = 1
		}
		entries = append(entries, e)
		b, _ := json.MarshalIndent(map[string]any{"time": cfg.Time.String(), "nodes": cfg.Nodes, "runs": entries,
			"written": time.Now().Format(time.RFC3339)}, "", "  ")
		os.WriteFile(filepath.Join(cfg.Results, "matrix.json"), b, 0o644)
	}
	// The regression scenarios: each fails until what it found is fixed.
	for _, name := range scenarioNames() {
		c, faults, _ := applyScenario(cfg, name)
		c.Matrix, c.fixed = false, faults
		c.Args = append(replaceFlag(cfg.Args, c.Families, c.Seed), "--scenario", name)
		ok, dir, err := runOnce(c)
		e := entry{Faults: "scenario " + name, Seed: c.Seed, Valid: ok && err == nil, Dir: dir}
		if err != nil {
			e.Error = err.Error()
		}
		if !e.Valid {
			status = 1
		}
		entries = append(entries, e)
	}
	fmt.Println("matrix:")
	for _, e := range entries {
		v := "PASS"
		if !e.Valid {
			v = "FAIL"
		}
		fmt.Printf("  %s  %-40s seed %d  %s %s\n", v, e.Faults, e.Seed, e.Dir, e.Error)
	}
	return status
}

// replaceFlag rewrites the command line of one matrix run so its report
// names the command that replays it.
func replaceFlag(args []string, fams []string, seed int64) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		name := strings.SplitN(a, "=", 2)[0]
		switch name {
		case "matrix":
			continue
		case "faults", "seed":
			if !strings.Contains(a, "=") {
				i++
			}
			continue
		}
		out = append(out, args[i])
	}
	return append(out, "--faults", strings.Join(fams, ","), "--seed", fmt.Sprint(seed))
}

// checkOnly runs the checkers over an earlier run's directory.
func checkOnly(cfg Config) int {
	ops, err := ReadHistory(filepath.Join(cfg.Check, "history.jsonl"))
	if err != nil {
		fatal(err)
	}
	logs := map[string]string{}
	nodes := 0
	for i := 0; ; i++ {
		p := filepath.Join(cfg.Check, fmt.Sprintf("n%d.log", i))
		if _, err := os.Stat(p); err != nil {
			break
		}
		logs[fmt.Sprintf("n%d", i)] = p
		nodes++
	}
	var healed int64
	for _, op := range ops {
		if op.F == "heal" {
			healed = op.Time
		}
	}
	var meta RunMeta
	if b, err := os.ReadFile(filepath.Join(cfg.Check, "results.json")); err == nil {
		var prev struct {
			Run RunMeta `json:"run"`
		}
		if json.Unmarshal(b, &prev) == nil {
			meta = prev.Run
		}
	}
	meta.Dir = cfg.Check
	res := Check(ops, logs, CheckParams{Healed: healed, Nodes: nodes})
	ok, err := WriteReport(cfg.Check, meta, res, ops)
	if err != nil {
		fatal(err)
	}
	if !ok {
		return 1
	}
	return 0
}
