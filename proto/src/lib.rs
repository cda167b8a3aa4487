//! Wire types for Switchboard.
//!
//! `inference` is the Open Inference Protocol (KServe V2) with Triton's message
//! names and field numbers, so tritonclient and perf_analyzer talk to us
//! unchanged. `switchboard::v1` is our own management and jobs API.

#[allow(clippy::all, clippy::pedantic)]
pub mod inference {
    tonic::include_proto!("inference");
}

pub mod switchboard {
    #[allow(clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("switchboard.v1");
    }
}
