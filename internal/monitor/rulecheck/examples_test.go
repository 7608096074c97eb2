package rulecheck

import (
	"path/filepath"
	"testing"

	"github.com/prometheus/prometheus/config"
)

// examples/06-monitoring/prometheus.yml is a configuration Prometheus loads, whose rule
// files are the shipped alerts (by reference, not a copy) and whose jobs scrape the
// exporter and the machine's node exporter.
func TestMonitoringExampleConfigLoadsWithTheShippedAlerts(t *testing.T) {
	cfg, err := config.LoadFile(filepath.Join(repo(t), "examples", "06-monitoring", "prometheus.yml"), false, nil)
	if err != nil {
		t.Fatalf("Prometheus refuses examples/06-monitoring/prometheus.yml: %v", err)
	}
	want := filepath.Join(repo(t), "docs", "monitoring", "alerts.yml")
	if len(cfg.RuleFiles) != 1 || filepath.Clean(cfg.RuleFiles[0]) != want {
		t.Errorf("rule_files = %v, want [%s]", cfg.RuleFiles, want)
	}
	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
	}
	if !jobs["orbstack"] || !jobs["node"] || len(jobs) != 2 {
		t.Errorf("scrape jobs = %v, want orbstack (the alert rules select it) and node", jobs)
	}
}
