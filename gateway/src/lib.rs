//! Switchboard's client-facing gateway: KServe V2 inference where
//! `model_name` is an endpoint, and the switchboard.v1 management and jobs APIs.

pub mod admin;
pub mod auth;
pub mod changes;
pub mod gate;
mod infer;
pub mod jobs;
pub mod limits;
mod manage;
pub mod oversize;
pub mod rest;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;

pub use infer::{GatewayV2, PIN_HEADER};
pub use server::{GatewayConfig, GatewayError, HttpListener, serve, serve_with_http};
