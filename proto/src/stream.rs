//! ModelStreamInfer served the same way by the worker and the gateway: each
//! request on the stream is handled as it arrives and answers go back as they
//! finish, matched by `id`. A failure travels in `error_message` and does not
//! end the stream (Triton's behaviour, which perf_analyzer expects).

use crate::inference::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use std::future::Future;
use std::pin::Pin;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

pub type Answers =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

/// Requests of one stream handled at once; past it, reading waits, so a
/// client that never reads its answers cannot grow the server's memory.
const IN_FLIGHT: usize = 1024;

pub fn serve<F, Fut>(mut incoming: Streaming<ModelInferRequest>, infer: F) -> Answers
where
    F: Fn(ModelInferRequest) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<ModelInferResponse, Status>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    tokio::spawn(async move {
        while let Some(msg) = incoming.next().await {
            let req = match msg {
                Ok(req) => req,
                // A message that cannot be read (too large, malformed) ends
                // the stream with its status rather than silently.
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    break;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (infer, tx) = (infer.clone(), tx.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let id = req.id.clone();
                let out = match infer(req).await {
                    Ok(resp) => ModelStreamInferResponse {
                        error_message: String::new(),
                        infer_response: Some(resp),
                    },
                    Err(s) => ModelStreamInferResponse {
                        error_message: s.message().to_string(),
                        infer_response: Some(ModelInferResponse {
                            id,
                            ..Default::default()
                        }),
                    },
                };
                let _ = tx.send(Ok(out)).await;
            });
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
