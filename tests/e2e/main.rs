//! The root crate's one integration-test binary: the `loramux` CLI end to end, and the HTTP
//! server in-process. Needs the default model (`loramux models fetch`; CI fetches it first).

mod cli;
mod gateway_metrics;
mod openai_fields;
mod request_bodies;
mod routing;
mod server;
mod vllm_api;
mod zoo;
