//! tonic refuses an oversize message with OUT_OF_RANGE; gRPC's own servers
//! (and DESIGN.md) say RESOURCE_EXHAUSTED. The refusal comes back as a
//! trailers-only response, so its status is in the headers to rewrite.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[cfg(test)]
mod tests;

#[derive(Clone, Default)]
pub struct OversizeStatusLayer;

impl<S> Layer<S> for OversizeStatusLayer {
    type Service = OversizeStatus<S>;
    fn layer(&self, inner: S) -> OversizeStatus<S> {
        OversizeStatus { inner }
    }
}

#[derive(Clone)]
pub struct OversizeStatus<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for OversizeStatus<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            rewrite(resp.headers_mut());
            Ok(resp)
        })
    }
}

/// Matched on the message as well, so that other OUT_OF_RANGE answers
/// (a bad argument range from a model, say) keep their code.
fn rewrite(h: &mut http::HeaderMap) {
    let oversize = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if oversize {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}
