//! `/metrics`: a prometheus-client [`Registry`] encoded as the Prometheus text format
//! (0.0.4, the default) or OpenMetrics 1.0 (when `Accept` asks for
//! `application/openmetrics-text`), and small helpers for the collectors that compute
//! their metrics at scrape time.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::balancer::counters::HistogramSnapshot;

/// The OpenMetrics content type served.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text (`# EOF` at the end).
    OpenMetrics,
}

impl Format {
    /// OpenMetrics if the `Accept` header names it (as Prometheus servers do when they
    /// prefer it), else the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                range
                    .split(';')
                    .next()
                    .is_some_and(|media| media.trim() == "application/openmetrics-text")
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// The registry's metrics in `format`, with its content type.
pub fn encode(
    registry: &Registry,
    format: Format,
) -> Result<(&'static str, String), std::fmt::Error> {
    let mut body = String::with_capacity(8 * 1024);
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut body, registry)?;
            Ok((
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                body,
            ))
        }
        Format::OpenMetrics => {
            prometheus_client::encoding::text::encode(&mut body, registry)?;
            Ok((OPENMETRICS_CONTENT_TYPE, body))
        }
    }
}

/// Labels as `(name, value)` pairs.
pub type Labels<'a> = Vec<(&'static str, &'a str)>;

/// A gauge family: one sample per label set (none: the family is declared, empty).
pub fn gauges<'a, V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// A gauge without labels.
pub fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A counter family; `name` without `_total` (the encoders add it).
pub fn counters<'a, V: prometheus_client::encoding::EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, V, f64>(&value, None)?;
    }
    Ok(())
}

/// A histogram family.
pub fn histograms<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, HistogramSnapshot)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in samples {
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                histogram.sum,
                histogram.count,
                &histogram.buckets,
                None,
            )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;

    #[derive(Debug)]
    struct Sample;

    impl Collector for Sample {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            counters(
                &mut encoder,
                "quaestor_things",
                "Things done.",
                [(vec![("service", "Wor\"ker\n")], 3u64)],
            )?;
            gauge(&mut encoder, "quaestor_level", "A level.", 0.5f64)?;
            histograms(
                &mut encoder,
                "quaestor_took_seconds",
                "How long.",
                [(
                    vec![("method", "M")],
                    HistogramSnapshot {
                        buckets: vec![(0.1, 2), (1.0, 1), (f64::INFINITY, 1)],
                        sum: 2.5,
                        count: 4,
                    },
                )],
            )
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Sample));
        registry
    }

    #[test]
    fn prometheus_text_names_counters_total_and_escapes_label_values() {
        let (content_type, text) = encode(&registry(), Format::Prometheus).unwrap();
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(
            text.contains("# TYPE quaestor_things_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("quaestor_things_total{service=\"Wor\\\"ker\\n\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("quaestor_level 0.5\n"), "{text}");
        // Buckets are cumulative on the wire.
        assert!(
            text.contains("quaestor_took_seconds_bucket{method=\"M\",le=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("quaestor_took_seconds_bucket{method=\"M\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("quaestor_took_seconds_count{method=\"M\"} 4\n"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn openmetrics_when_asked_and_ends_with_eof() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")),
            Format::Prometheus
        );
        let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::from_accept(Some(accept)), Format::OpenMetrics);
        let (content_type, text) = encode(&registry(), Format::OpenMetrics).unwrap();
        assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
        assert!(text.contains("# TYPE quaestor_things counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
