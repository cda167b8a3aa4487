//! A batch's spans for traces, tied to its requests as TGI ties entries to
//! batches: the batch is a span of its own (one execution serves many
//! traces) that links to every request's span, and each request gets an
//! `execute` span, its child, that links back to the batch. Nothing here
//! runs unless traces are exported.

use super::{Pending, Shared};
use proto::trace::TARGET as TRACE;
use tracing::{Span, debug_span};

/// Held while the batch runs; dropping it ends the spans.
pub(super) struct BatchSpans {
    _batch: Span,
    _each: Vec<Span>,
}

pub(super) fn trace_batch(
    shared: &Shared,
    batch: &mut [Pending],
    instance: usize,
    id: u64,
    rows: usize,
) -> Option<BatchSpans> {
    // The wait ends as the batch starts, traced or not.
    for p in batch.iter_mut() {
        p.queue_wait = Span::none();
    }
    // Untraced requests (all of them, with OTLP off) have no span.
    if batch.iter().all(|p| p.span.is_none()) {
        return None;
    }
    let span = debug_span!(
        target: TRACE,
        parent: None,
        "batch execution",
        model = %shared.name,
        instance,
        batch = id,
        rows,
        requests = batch.len(),
    );
    let each = batch
        .iter()
        .filter(|p| !p.span.is_none())
        .map(|p| {
            span.follows_from(&p.span);
            let e = debug_span!(target: TRACE, parent: &p.span, "execute", batch = id, rows);
            e.follows_from(&span);
            e
        })
        .collect();
    Some(BatchSpans {
        _batch: span,
        _each: each,
    })
}
