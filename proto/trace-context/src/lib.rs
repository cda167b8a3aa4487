//! W3C trace context (`traceparent`, `tracestate`) across process
//! boundaries: read from a request's headers, made the parent of the span
//! that serves it, and written onto what this process sends on (the call to
//! a worker, the job record a batcher picks up).
//!
//! A process that exports no traces still passes on what came in, so one
//! trace survives a hop that does not take part in it: `outgoing` falls back
//! to the headers of the request being served (held in a task-local).
//!
//! Sampling is decided once, where a trace enters a process
//! ([`sampled`]): the caller's flag when it sent one, else the ratio. An
//! unsampled call gets no span at all, and spans below it are opened with
//! [`child_span!`], which opens nothing outside a span: so an unsampled
//! request costs what one with OTLP off costs, not the price of spans the
//! exporter would drop. The spans this crate's users open for traces all
//! have the target [`TARGET`] and level DEBUG, which only the exporter's
//! layer asks for.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::task::futures::TaskLocalFuture;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span meant for traces.
pub const TARGET: &str = "switchboard::trace";

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The two W3C headers, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carrier {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

tokio::task_local! {
    static INCOMING: Carrier;
}

static EXPORTING: AtomicBool = AtomicBool::new(false);
/// The share of traces started here that are sampled, as f64 bits.
static RATIO: AtomicU64 = AtomicU64::new(0);

/// Spans are exported from now on; `ratio` of the traces that start in
/// this process are sampled.
pub fn start_sampling(ratio: f64) {
    RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    EXPORTING.store(true, Ordering::Relaxed);
}

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether work that came with `incoming` is traced here: never when
/// nothing is exported; as the caller said when it sent a sampled flag;
/// else by the ratio.
pub fn sampled(incoming: &Carrier) -> bool {
    if !exporting() {
        return false;
    }
    incoming.sampled_flag().unwrap_or_else(|| {
        let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
        ratio >= 1.0 || rand::random::<f64>() < ratio
    })
}

/// A new trace's context marked "not sampled", for a call that starts a
/// trace here and was not sampled: sent on, it tells the next process not
/// to sample its part either.
pub fn unsampled_root() -> Carrier {
    let (t, s): (u128, u64) = (rand::random(), rand::random());
    Carrier {
        traceparent: Some(format!("00-{:032x}-{:016x}-00", t.max(1), s.max(1))),
        tracestate: None,
    }
}

/// A trace span (target [`TARGET`], DEBUG) below the current one, or
/// nothing when there is no current span (the call is not traced).
#[macro_export]
macro_rules! child_span {
    ($($args:tt)*) => {
        if ::tracing::Span::current().is_none() {
            ::tracing::Span::none()
        } else {
            ::tracing::debug_span!(target: $crate::TARGET, $($args)*)
        }
    };
}

impl Carrier {
    pub fn from_headers(h: &http::HeaderMap) -> Carrier {
        let get = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .filter(|v| !v.is_empty())
        };
        Carrier {
            traceparent: get(TRACEPARENT),
            tracestate: get(TRACESTATE),
        }
    }

    /// From stored text (a job record's fields); empty means absent.
    pub fn from_fields(traceparent: &str, tracestate: &str) -> Carrier {
        let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        Carrier {
            traceparent: some(traceparent),
            tracestate: some(tracestate),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }

    /// The header pairs to send (none without a `traceparent`: a
    /// `tracestate` alone means nothing).
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let tp = self.traceparent.as_deref().map(|v| (TRACEPARENT, v));
        let ts = self
            .tracestate
            .as_deref()
            .filter(|_| tp.is_some())
            .map(|v| (TRACESTATE, v));
        tp.into_iter().chain(ts)
    }

    /// Writes the pairs into `h`; values that are not valid header text
    /// are left out.
    pub fn inject(&self, h: &mut http::HeaderMap) {
        for (k, v) in self.pairs() {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        }
    }

    /// The trace id in `traceparent` (`00-<trace id>-<span id>-<flags>`),
    /// when it has the W3C shape.
    pub fn trace_id(&self) -> Option<&str> {
        let id = self.traceparent.as_deref()?.split('-').nth(1)?;
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    }

    /// The sampled bit of `traceparent`'s flags, when it has the W3C shape.
    pub fn sampled_flag(&self) -> Option<bool> {
        let tp = self.traceparent.as_deref()?;
        let parts: Vec<&str> = tp.split('-').collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.len() < 4 || !hex(parts[1], 32) || !hex(parts[2], 16) || !hex(parts[3], 2) {
            return None;
        }
        u8::from_str_radix(parts[3], 16).ok().map(|f| f & 1 == 1)
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
}

/// Runs `f` with `incoming` as the trace headers of the request it serves.
pub fn scope<F: Future>(incoming: Carrier, f: F) -> TaskLocalFuture<Carrier, F> {
    INCOMING.scope(incoming, f)
}

/// The span of work that enters this process with `incoming` (a call, a
/// job step): `make`'s span, the child of `incoming`'s context, when the
/// work is sampled ([`sampled`]); else no span.
pub fn entry_span(incoming: &Carrier, make: impl FnOnce() -> Span) -> Span {
    if !sampled(incoming) {
        return Span::none();
    }
    let span = make();
    set_parent(&span, incoming);
    span
}

/// Makes the remote context in `c` the parent of `span` (nothing when the
/// span is off or `c` holds no valid `traceparent`).
pub fn set_parent(span: &Span, c: &Carrier) {
    if c.is_empty() || span.is_disabled() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(c));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// What to send on from here: the current span's context when this process
/// traces, else the headers of the request being served, else nothing.
pub fn outgoing() -> Carrier {
    let span = Span::current();
    if !span.is_disabled() {
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            let mut c = Carrier::default();
            opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut c));
            if !c.is_empty() {
                return c;
            }
        }
    }
    INCOMING.try_with(Carrier::clone).unwrap_or_default()
}

/// The trace id of what is being served, for log lines: the current span's
/// when this process traces, else the one the request came with.
pub fn trace_id() -> Option<String> {
    let span = Span::current();
    if !span.is_disabled() {
        let sc = span.context().span().span_context().clone();
        if sc.is_valid() {
            return Some(sc.trace_id().to_string());
        }
    }
    INCOMING
        .try_with(|c| c.trace_id().map(str::to_string))
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests;
