package certserver

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/certserver/certserver/store"
)

// RecordCacher is implemented by stores that keep a cache of the records
// lookups read (store.Badger: [store] record_cache). RecordCacheStats
// must be cheap: it is called on every scrape of /metrics.
type RecordCacher interface {
	RecordCacheStats() store.RecordCacheStats
}

// recordCacheCollector exports the store's record cache at every scrape:
//
//	certserver_record_cache_hits_total      lookups whose record came from the cache
//	certserver_record_cache_misses_total    lookups whose record was read from the store
//	certserver_record_cache_fast_hits_total of the hits, lookups that read nothing from the store
//	certserver_record_cache_bytes{part}     used (records held) and size (its bound)
//	certserver_record_cache_records         records it holds
//	certserver_record_cache_fast_entries    small entries pointing names at records under other keys
type recordCacheCollector struct{ c RecordCacher }

var (
	descRecordCacheHits = prometheus.NewDesc("certserver_record_cache_hits_total",
		"Certificate lookups whose record came from the store's record cache ([store] record_cache).", nil, nil)
	descRecordCacheMisses = prometheus.NewDesc("certserver_record_cache_misses_total",
		"Certificate lookups whose record was read from the store's files, and then cached; many misses against few hits for the same names mean the cache is too small for the names asked for again.", nil, nil)
	descRecordCacheFastHits = prometheus.NewDesc("certserver_record_cache_fast_hits_total",
		"Of the record cache's hits, the certificate lookups answered from the cache alone, without reading the store's index for the record's version (no write changed the name since a lookup found it).", nil, nil)
	descRecordCacheBytes = prometheus.NewDesc("certserver_record_cache_bytes",
		"The record cache's memory, by part: used (the records it holds, with what evicted ones left until it is reused) and size (its bound, [store] record_cache; 0 when off).",
		[]string{"part"}, nil)
	descRecordCacheRecords = prometheus.NewDesc("certserver_record_cache_records",
		"Records the record cache holds.", nil, nil)
	descRecordCacheFastEntries = prometheus.NewDesc("certserver_record_cache_fast_entries",
		"Small entries (100 to 200 bytes each) the record cache holds besides the records, each sending a lookup of a name served through its wildcard or by a certificate of several names to the record kept under another key.", nil, nil)
)

func (c recordCacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRecordCacheHits
	ch <- descRecordCacheMisses
	ch <- descRecordCacheFastHits
	ch <- descRecordCacheBytes
	ch <- descRecordCacheRecords
	ch <- descRecordCacheFastEntries
}

func (c recordCacheCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.c.RecordCacheStats()
	ch <- prometheus.MustNewConstMetric(descRecordCacheHits, prometheus.CounterValue, float64(st.Hits))
	ch <- prometheus.MustNewConstMetric(descRecordCacheMisses, prometheus.CounterValue, float64(st.Misses))
	ch <- prometheus.MustNewConstMetric(descRecordCacheFastHits, prometheus.CounterValue, float64(st.FastHits))
	ch <- prometheus.MustNewConstMetric(descRecordCacheBytes, prometheus.GaugeValue, float64(st.Used), "used")
	ch <- prometheus.MustNewConstMetric(descRecordCacheBytes, prometheus.GaugeValue, float64(st.Size), "size")
	ch <- prometheus.MustNewConstMetric(descRecordCacheRecords, prometheus.GaugeValue, float64(st.Entries))
	ch <- prometheus.MustNewConstMetric(descRecordCacheFastEntries, prometheus.GaugeValue, float64(st.FastEntries))
}
