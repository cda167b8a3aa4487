//! A layer that checks each request before the service sees it and answers
//! a gRPC status at once when the check fails. Authentication, the rate
//! limit and the management service's admin check are all gates: each is a
//! plain `Check`, and `GateLayer` makes it a tower layer.

use futures::future::{Either, Ready, ready};
use std::task::{Context, Poll};
use tonic::Status;
use tonic::server::NamedService;
use tower::{Layer, Service};

pub trait Check: Clone {
    /// May add to the request (e.g. the caller's identity) or refuse it.
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Status>;
}

#[derive(Clone)]
pub struct GateLayer<C>(pub C);

impl<S, C: Check> Layer<S> for GateLayer<C> {
    type Service = Gate<S, C>;
    fn layer(&self, inner: S) -> Gate<S, C> {
        Gate {
            inner,
            check: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S, C> {
    inner: S,
    check: C,
}

/// A gate in front of one gRPC service is still that service to tonic's
/// router, which routes by this name.
impl<S: NamedService, C> NamedService for Gate<S, C> {
    const NAME: &'static str = S::NAME;
}

impl<S, C, B, RB> Service<http::Request<B>> for Gate<S, C>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    C: Check,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.check.check(&mut req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}
