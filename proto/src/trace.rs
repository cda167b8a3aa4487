//! The server side of trace propagation, as one tower layer at the top of a
//! server's stack (gRPC, and the gateway's REST routes): each call gets a server span whose parent is the
//! caller's `traceparent`, and the call runs inside it (so what the service
//! sends on, and what it logs, carries the same trace).

use std::task::{Context, Poll};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
pub use trace_context::{Carrier, TARGET, child_span, outgoing, set_parent, trace_id};
use tracing::Instrument;
use tracing::instrument::Instrumented;

#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Traced<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Carrier, Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut incoming = Carrier::from_headers(req.headers());
        // `otel.name` is the span's name in the trace: the gRPC method (or
        // the REST path).
        let span = trace_context::entry_span(&incoming, || {
            tracing::debug_span!(
                target: TARGET,
                "rpc",
                otel.name = %req.uri().path(),
                otel.kind = "server",
            )
        });
        // Not traced: no span here or below. A trace that starts here
        // unsampled says so downstream, so no later hop samples a fragment
        // of it.
        if span.is_none() && incoming.is_empty() && trace_context::exporting() {
            incoming = trace_context::unsampled_root();
        }
        // Layers below check synchronously in `call` (authentication):
        // inside the span too.
        let fut = span.in_scope(|| self.inner.call(req));
        trace_context::scope(incoming, fut.instrument(span))
    }
}

/// Writes the trace context to send on into a request's metadata.
pub fn inject<T>(req: &mut tonic::Request<T>) {
    let out = trace_context::outgoing();
    for (k, v) in out.pairs() {
        if let Ok(v) = v.parse() {
            req.metadata_mut().insert(k, v);
        }
    }
}
