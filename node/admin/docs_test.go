package admin

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// metricNames are the names of every metric the collectors describe.
func metricNames() map[string]bool {
	ch := make(chan *prometheus.Desc, 256)
	newBrokerCollector(nil, "").Describe(ch)
	newClusterCollector(nil).Describe(ch)
	close(ch)
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for d := range ch {
		names[re.FindStringSubmatch(d.String())[1]] = true
	}
	return names
}

// docs/operations.md lists every metric, and the Grafana dashboard uses
// only metrics that exist.
func TestDocsAndDashboardMatchTheMetrics(t *testing.T) {
	names := metricNames()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for n := range names {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("docs/operations.md does not describe %s", n)
		}
	}
	dash, err := os.ReadFile("../../deploy/grafana/mqcluster-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`mqcluster_[a-z0-9_]+`).FindAllString(string(dash), -1)
	if len(used) < 20 {
		t.Fatalf("the dashboard uses %d metrics", len(used))
	}
	for _, n := range used {
		base := n
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(n, suffix); ok && names[b] {
				base = b
			}
		}
		if !names[base] && n != "mqcluster_" {
			t.Errorf("the dashboard uses %s, which no collector exposes", n)
		}
	}
}
