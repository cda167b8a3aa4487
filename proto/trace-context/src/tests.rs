use super::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn carrier(tp: &str, ts: &str) -> Carrier {
    Carrier::from_fields(tp, ts)
}

#[test]
fn headers_in_and_out() {
    let mut h = http::HeaderMap::new();
    h.insert(TRACEPARENT, TP.parse().unwrap());
    h.insert(TRACESTATE, "congo=t61rcWkgMzE".parse().unwrap());
    let c = Carrier::from_headers(&h);
    assert_eq!(c, carrier(TP, "congo=t61rcWkgMzE"));
    assert_eq!(c.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    let mut out = http::HeaderMap::new();
    c.inject(&mut out);
    assert_eq!(out, h);
    // A tracestate without a traceparent is not sent on.
    assert_eq!(carrier("", "a=b").pairs().count(), 0);
    assert_eq!(carrier("00-zz-00f067aa0ba902b7-01", "").trace_id(), None);
}

#[tokio::test]
async fn passes_on_what_came_in_when_not_tracing() {
    let c = carrier(TP, "a=b");
    let seen = scope(c.clone(), async { (outgoing(), trace_id()) }).await;
    assert_eq!(seen.0, c);
    assert_eq!(seen.1.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    // Outside a request there is nothing to pass on.
    assert!(outgoing().is_empty());
}

#[test]
fn a_traced_span_is_the_child_of_the_remote_parent() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::debug_span!(target: TARGET, "rpc");
        set_parent(&span, &carrier(TP, ""));
        let _g = span.enter();
        let out = outgoing();
        let tp = out.traceparent.expect("a traceparent to send on");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
        assert_ne!(
            parts[2], "00f067aa0ba902b7",
            "our own span is the parent now"
        );
        assert_eq!(trace_id().as_deref(), Some(parts[1]));
    });
}

#[test]
fn sampling_is_decided_where_a_trace_enters() {
    // Both halves in one test: the switch is process-wide.
    assert!(
        !sampled(&carrier(TP, "")),
        "nothing is sampled without export"
    );
    start_sampling(0.0);
    assert!(sampled(&carrier(TP, "")), "the caller's sampled flag");
    let unsampled = TP.replace("-01", "-00");
    assert!(!sampled(&carrier(&unsampled, "")));
    assert!(!sampled(&Carrier::default()), "ratio 0: no root is sampled");
    start_sampling(1.0);
    assert!(sampled(&Carrier::default()));
    let root = unsampled_root();
    assert_eq!(root.sampled_flag(), Some(false));
    assert!(root.trace_id().is_some(), "{root:?}");
    assert_eq!(carrier("garbage", "").sampled_flag(), None);
}

#[test]
fn child_spans_only_below_a_span() {
    let provider = SdkTracerProvider::builder().build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        assert!(crate::child_span!("orphan").is_none());
        let parent = tracing::debug_span!(target: TARGET, "rpc");
        let _g = parent.enter();
        assert!(!crate::child_span!("child").is_none());
    });
}
