// Package rulecheck holds one test: the alert rules and the Grafana dashboard
// shipped in docs/monitoring/ are parsed with Prometheus's own parsers
// (model/rulefmt, promql/parser) and checked against the metrics a running
// `pyinfra-orbstack monitor` really serves, scraped over HTTP; then every alert is
// evaluated by Prometheus's PromQL engine over those scraped samples.
//
// It is a module of its own so that github.com/prometheus/prometheus (a large
// module graph, and a newer go directive) stays out of the product's go.mod and
// binary: only this test needs it. Run it with `make test-monitoring`.
package rulecheck
