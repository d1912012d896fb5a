package metrics

import "github.com/prometheus/client_golang/prometheus"

// snapshotCollector exports the counters of a component that keeps its own (a Stats
// method returning a snapshot), read once per scrape.
type snapshotCollector[S any] struct {
	stats  func() S
	values []snapshotValue[S]
}

// snapshotValue is one metric of a snapshot: its description, its type and how to
// read it.
type snapshotValue[S any] struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	read func(S) float64
}

// counterOf and gaugeOf describe one metric of a snapshot (name without the
// namespace, help, and how to read it).
func counterOf[S any](name, help string, read func(S) float64) snapshotValue[S] {
	return snapshotValue[S]{prometheus.NewDesc(namespace+"_"+name, help, nil, nil), prometheus.CounterValue, read}
}

func gaugeOf[S any](name, help string, read func(S) float64) snapshotValue[S] {
	return snapshotValue[S]{prometheus.NewDesc(namespace+"_"+name, help, nil, nil), prometheus.GaugeValue, read}
}

func (c snapshotCollector[S]) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.values {
		ch <- v.desc
	}
}

func (c snapshotCollector[S]) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for _, v := range c.values {
		ch <- prometheus.MustNewConstMetric(v.desc, v.typ, v.read(st))
	}
}
